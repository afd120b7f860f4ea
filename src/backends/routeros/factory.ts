// Picks the RouterOS client for a router URL: binary API (api://, api-ssl://)
// or REST (https://). Kept apart from client.ts to avoid an import cycle.
import type { RouterTarget } from '../../config/model.js';
import { ApiClient } from './api-client.js';
import type { ClientContext, RouterosClient } from './client.js';
import { RestClient } from './rest-client.js';
import { parseRouterUrl } from './target.js';

export function createRouterosClient(target: RouterTarget, ctx: ClientContext): RouterosClient {
  const address = parseRouterUrl(target.url);
  return address.transport === 'rest' ? new RestClient(address, target, ctx) : new ApiClient(address, target, ctx);
}
