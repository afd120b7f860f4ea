// Where a value sits in a YAML file: turns a data path (["rules", 0, "key"])
// into the line of that node, or of its nearest existing ancestor when the key
// is missing, so every sesame YAML error can name file:line and the key.
import { isAlias, isMap, isPair, isScalar, isSeq, type Document, type LineCounter, type Node as YamlNode } from 'yaml';
import { ConfigError } from './model.js';

export type DataPath = readonly (string | number)[];

/** `rules[0].open_ports[1]` */
export function pathText(path: DataPath): string {
  let out = '';
  for (const seg of path) out += typeof seg === 'number' ? `[${seg}]` : out === '' ? seg : `.${seg}`;
  return out;
}

export class YamlPlaces {
  constructor(private readonly doc: Document, private readonly lines: LineCounter, readonly file: string) {}

  private lineOfNode(node: unknown): number | undefined {
    const range = (node as { range?: [number, number, number] } | null)?.range;
    return range ? this.lines.linePos(range[0]).line : undefined;
  }

  /** Line of the value at `path`; a missing key gives its parent's line. `keyLine` prefers the key's own line. */
  line(path: DataPath, keyLine = false): number | undefined {
    let node: unknown = this.doc.contents;
    let line = this.lineOfNode(node);
    for (const seg of path) {
      if (isAlias(node)) node = node.resolve(this.doc);
      let next: unknown;
      if (isMap(node)) {
        const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(seg));
        if (!pair) return line;
        if (keyLine && seg === path[path.length - 1]) return this.lineOfNode(pair.key) ?? line;
        next = pair.value ?? pair.key;
      } else if (isSeq(node) && typeof seg === 'number') {
        next = node.items[seg];
      } else {
        return line;
      }
      if (next === undefined || next === null) return line;
      node = next;
      line = this.lineOfNode(node as YamlNode) ?? line;
    }
    return line;
  }

  error(path: DataPath, problem: string, keyLine = false): ConfigError {
    return new ConfigError(this.file, this.line(path, keyLine), path.length > 0 ? pathText(path) : undefined, problem);
  }
}
