// The web knock page (issue 11 deliverable 2; docs/web-knock-page.md): gateway
// profiles in localStorage (optionally locked), provisioning from the URL
// fragment, and one-tap knocks that carry a real fwknop SPA packet to the
// gateway inside a WebRTC ICE connectivity check (../shared/docs/web-knock.md).
// "opened" means the gateway's Binding Success, signed with W, made ICE
// `connected`: the gateway only answers packets it granted.
import { buildWebKnock, fabricatedAnswer, WebKnockError } from '../knock.js';
import { isProvisioningFragment, parseWebLink, type WebProfile } from '../link.js';
import { readVault, unlockVault, upsertProfile, writeVault, VaultError, type SealedBox } from './vault.js';

/** How long to wait for the acknowledgement: Chromium checks every 62.5 ms, Firefox retransmits up to 6.3 s. */
const ACK_TIMEOUT_MS = 5000;
export const NO_ANSWER = 'no answer: check the keys, the clock, the port, or the network\'s UDP filtering';

type StatusKind = 'idle' | 'knocking' | 'opened' | 'failed' | 'error' | 'locked';

interface PageState {
  profiles: WebProfile[];
  /** The passphrase while unlocked (memory only), so saves re-seal. */
  passphrase?: string;
  sealed?: SealedBox;
  /** A provisioning link that arrived while the profiles were locked. */
  pending?: { profile: WebProfile; knock: boolean };
  busy: boolean;
}

const state: PageState = { profiles: [], busy: false };

function $(id: string): HTMLElement {
  const el = document.getElementById(id);
  if (!el) throw new Error(`page element #${id} is missing`);
  return el;
}

function setStatus(kind: StatusKind, text: string): void {
  const el = $('status');
  el.dataset.state = kind;
  el.textContent = text;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, props: Partial<Record<string, string>> = {}, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) if (v !== undefined) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function render(): void {
  const list = $('profiles');
  list.replaceChildren();
  const locked = state.sealed !== undefined && state.passphrase === undefined;
  $('unlock').hidden = !locked;
  $('add').hidden = locked;
  $('lock').hidden = locked;
  $('lock-state').textContent = state.passphrase !== undefined ? 'Locked with a passphrase: the keys are stored encrypted.' : 'Not locked: anyone with this browser can read the keys.';
  $('lock-remove').hidden = state.passphrase === undefined;
  if (locked) return;
  if (state.profiles.length === 0) {
    list.append(el('p', { class: 'empty' }, 'No gateway yet. Open a provisioning link (sesame keygen --web, sesame up) or paste one below.'));
    return;
  }
  state.profiles.forEach((p, i) => {
    const card = el('article', { class: 'card', 'data-profile': p.name });
    const info = el('div', { class: 'info' });
    info.append(el('h2', {}, p.name), el('p', { class: 'where' }, `${p.hosts.join(', ')} : ${p.port}`), el('p', { class: 'what' }, `opens ${p.access.join(', ')}`));
    const knock = el('button', { class: 'knock', type: 'button', 'data-index': String(i) }, 'Knock');
    knock.addEventListener('click', () => void knockProfile(p));
    const actions = el('div', { class: 'actions' });
    if (p.open) actions.append(el('a', { class: 'open', href: p.open, hidden: '' }, `Open ${p.open.length > 40 ? p.open.slice(0, 40) + '…' : p.open}`));
    const forget = el('button', { class: 'forget', type: 'button' }, 'Forget');
    forget.addEventListener('click', () => {
      if (!confirm(`Forget the gateway "${p.name}" and its keys?`)) return;
      void save(state.profiles.filter((x) => x !== p)).then(render);
    });
    actions.append(forget);
    card.append(info, knock, actions);
    list.append(card);
  });
}

async function save(profiles: WebProfile[]): Promise<void> {
  await writeVault(localStorage, profiles, state.passphrase);
  state.profiles = profiles;
}

function waitForAck(pc: RTCPeerConnection, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      pc.removeEventListener('iceconnectionstatechange', check);
      resolve(ok);
    };
    const check = (): void => {
      if (pc.iceConnectionState === 'connected' || pc.iceConnectionState === 'completed') done(true);
    };
    const timer = setTimeout(() => done(false), ms);
    pc.addEventListener('iceconnectionstatechange', check);
    check();
  });
}

/** One knock: a fresh packet, a fabricated answer, and the wait for the signed Binding Success. */
async function knockProfile(profile: WebProfile): Promise<void> {
  if (state.busy) return;
  state.busy = true;
  document.body.classList.add('busy');
  let pc: RTCPeerConnection | undefined;
  try {
    const k = buildWebKnock(profile, Date.now() / 1000);
    if (typeof RTCPeerConnection === 'undefined') {
      setStatus('error', 'this browser has WebRTC turned off (a policy or media.peerconnection.enabled=false); web knocks need it');
      return;
    }
    setStatus('knocking', `knocking on ${profile.name}…`);
    pc = new RTCPeerConnection({ iceServers: [] });
    pc.createDataChannel('sesame');
    await pc.setLocalDescription(await pc.createOffer());
    const offer = pc.localDescription?.sdp ?? '';
    try {
      await pc.setRemoteDescription({ type: 'answer', sdp: fabricatedAnswer(offer, k, profile.hosts, profile.port) });
    } catch (e) {
      setStatus('error', `the browser refused to knock: ${(e as Error).message}`);
      return;
    }
    if (await waitForAck(pc, ACK_TIMEOUT_MS)) {
      setStatus('opened', `opened: ${profile.name} lets this device in (${profile.access.join(', ')})`);
      const link = document.querySelector<HTMLAnchorElement>(`article[data-profile="${CSS.escape(profile.name)}"] a.open`);
      if (link && profile.open) {
        link.hidden = false;
        const target = profile.open;
        setTimeout(() => location.assign(target), 400);
      }
    } else {
      setStatus('failed', NO_ANSWER);
    }
  } catch (e) {
    setStatus('error', e instanceof WebKnockError || e instanceof VaultError ? e.message : `unexpected error: ${(e as Error).message}`);
  } finally {
    pc?.close();
    state.busy = false;
    document.body.classList.remove('busy');
  }
}

async function importProfile(profile: WebProfile, knock: boolean): Promise<void> {
  await save(upsertProfile(state.profiles, profile));
  render();
  if (knock) {
    await knockProfile(profile);
    return;
  }
  // Say now, not at the first tap, when this profile's packets can never be sent.
  try {
    buildWebKnock(profile, Date.now() / 1000);
    setStatus('idle', `imported ${profile.name}`);
  } catch (e) {
    setStatus('error', `imported ${profile.name}, but it cannot knock: ${(e as Error).message}`);
  }
}

/** Read a provisioning fragment once, then wipe it from the address bar and the history entry. */
function takeFragment(): { profile: WebProfile; knock: boolean } | undefined {
  const hash = location.hash;
  if (!isProvisioningFragment(hash)) return undefined;
  history.replaceState(history.state, '', location.href.slice(0, location.href.indexOf('#')));
  try {
    return parseWebLink(hash);
  } catch (e) {
    setStatus('error', `the link was not imported: ${(e as Error).message}`);
    return undefined;
  }
}

function pastedLink(text: string): string {
  const t = text.trim();
  const i = t.indexOf('#');
  return i === -1 ? t : t.slice(i + 1);
}

function wire(): void {
  $('unlock-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = $('unlock-pass') as HTMLInputElement;
    void (async () => {
      try {
        setStatus('locked', 'unlocking…');
        state.profiles = await unlockVault(state.sealed!, input.value);
        state.passphrase = input.value;
        input.value = '';
        render();
        setStatus('idle', 'unlocked');
        const pending = state.pending;
        state.pending = undefined;
        if (pending) await importProfile(pending.profile, pending.knock);
      } catch (e) {
        setStatus('locked', (e as Error).message);
      }
    })();
  });
  $('add-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const area = $('add-link') as HTMLTextAreaElement;
    try {
      const parsed = parseWebLink(pastedLink(area.value));
      area.value = '';
      void importProfile(parsed.profile, false);
    } catch (e) {
      setStatus('error', `not imported: ${(e as Error).message}`);
    }
  });
  $('lock-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = $('lock-pass') as HTMLInputElement;
    if (input.value.length < 8) {
      setStatus('error', 'the passphrase is shorter than 8 characters; choose a longer one');
      return;
    }
    const pass = input.value;
    input.value = '';
    void (async () => {
      state.passphrase = pass;
      await save(state.profiles);
      state.sealed = (readVault(localStorage) as { sealed?: SealedBox }).sealed;
      render();
      setStatus('idle', 'locked: the keys are stored encrypted with the passphrase');
    })();
  });
  $('lock-remove').addEventListener('click', () => {
    void (async () => {
      state.passphrase = undefined;
      state.sealed = undefined;
      await save(state.profiles);
      render();
      setStatus('idle', 'the passphrase lock is removed');
    })();
  });
}

function registerServiceWorker(): void {
  // Only the installable export (--dir) links a manifest; service workers need HTTPS.
  if (location.protocol !== 'https:' || !document.querySelector('link[rel="manifest"]') || !('serviceWorker' in navigator)) return;
  navigator.serviceWorker.register('sw.js').catch(() => undefined);
}

async function start(): Promise<void> {
  wire();
  const incoming = takeFragment();
  try {
    const v = readVault(localStorage);
    if (v.kind === 'open') state.profiles = v.profiles;
    if (v.kind === 'locked') state.sealed = v.sealed;
  } catch (e) {
    setStatus('error', (e as Error).message);
  }
  render();
  if (state.sealed && state.passphrase === undefined) {
    if (incoming) state.pending = incoming;
    setStatus('locked', incoming ? `unlock to import ${incoming.profile.name}` : 'locked: type the passphrase');
  } else if (incoming) {
    await importProfile(incoming.profile, incoming.knock);
  } else if ($('status').dataset.state !== 'error') {
    setStatus('idle', state.profiles.length > 0 ? 'tap Knock to open' : 'no gateway yet');
  }
  registerServiceWorker();
  document.body.dataset.ready = '1';
}

void start();
