// An agent on the official MCP TypeScript SDK: list tools and call echo over
// Streamable HTTP, authenticated by a bearer token; prints what it saw as JSON.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const transport = new StreamableHTTPClientTransport(new URL(process.argv[2]), {
  requestInit: { headers: { Authorization: `Bearer ${process.env.WA_TOKEN}` } },
});
const client = new Client({ name: "node-test", version: "1.0.0" });
await client.connect(transport);
const tools = (await client.listTools()).tools.map((t) => t.name);
const echo = await client.callTool({ name: "echo", arguments: { text: "from node" } });
await transport.terminateSession();
await client.close();
console.log(JSON.stringify({ tools, echo: echo.content[0].text }));
