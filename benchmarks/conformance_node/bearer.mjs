// Preloaded into the conformance suite's node (--import): the suite's MCP client has no
// option for headers, so every HTTP request it makes to $WA_URL's origin (through fetch
// or undici, which share node's global dispatcher) gets `Authorization: Bearer
// $WA_TOKEN`, as an agent's real client would send it.  Nothing else changes.
import { Agent, setGlobalDispatcher } from 'undici';

const token = process.env.WA_TOKEN;
const origin = new URL(process.env.WA_URL).origin;

function withToken(headers) {
  const bearer = `Bearer ${token}`;
  if (headers == null) return { authorization: bearer };
  if (Array.isArray(headers)) {
    const flat = headers.flat();
    for (let i = 0; i < flat.length; i += 2) {
      if (String(flat[i]).toLowerCase() === 'authorization') return headers;
    }
    return [...flat, 'authorization', bearer];
  }
  const names = Object.keys(headers).map((name) => name.toLowerCase());
  return names.includes('authorization') ? headers : { ...headers, authorization: bearer };
}

setGlobalDispatcher(new Agent().compose((dispatch) => (opts, handler) =>
  dispatch(new URL(String(opts.origin)).origin === origin
    ? { ...opts, headers: withToken(opts.headers) } : opts, handler)));
