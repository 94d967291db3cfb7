// A two-node app on gvpn providers, as a golem-js (v3) requestor: one node
// serves HTTP from the requestor's own image, the other fetches the page over
// the VPN. docs/requestor.md explains each part.
//
//   IMAGE_HASH=<sha3-224> [IMAGE_URL=<url>] YAGNA_APPKEY=<key> node gvpn-http.mjs
//
// The image needs /bin/sh and busybox (httpd, wget); an Alpine-based GVMI has both.
import { GolemNetwork } from "@golem-sdk/golem-js";

// What selects gvpn: the runtime name of its descriptor (docs/ya-runtime-gvpn.json)
// and the capability `gvpn-runtime offer-template` advertises. golem-js turns
// them into the constraints (golem.runtime.name=gvpn) and
// (golem.runtime.capabilities=vpn).
const RUNTIME = { name: "gvpn" };
const CAPABILITIES = ["vpn"];
const HTTP_PORT = 8080;

const imageHash = process.env.IMAGE_HASH;
const imageUrl = process.env.IMAGE_URL;
if (!imageHash) {
  console.error("set IMAGE_HASH to the image's SHA3-224 (and IMAGE_URL where it is not on the registry)");
  process.exit(2);
}

// "try_golem" is the app key golem-js's own examples use with a local yagna.
const glm = new GolemNetwork({ api: { key: process.env.YAGNA_APPKEY || "try_golem" } });
try {
  await glm.connect();
  const network = await glm.createNetwork({ ip: "192.168.50.0/24" });
  const order = {
    demand: {
      workload: {
        // golem-js sends these as golem.srv.comp.task_package
        // ("hash:sha3:<hash>:<url>"), the property the ExeUnit downloads the
        // image from; without an image it throws "You must define a package
        // or manifest option".
        imageHash,
        ...(imageUrl ? { imageUrl } : {}),
        runtime: RUNTIME,
        capabilities: CAPABILITIES,
      },
    },
    market: {
      rentHours: 0.5,
      pricing: { model: "linear", maxStartPrice: 0.5, maxCpuPerHourPrice: 1.0, maxEnvPerHourPrice: 0.5 },
    },
    network,
  };
  const pool = await glm.manyOf({ poolSize: 2, order });
  const serverRental = await pool.acquire();
  const clientRental = await pool.acquire();
  try {
    const server = await serverRental.getExeUnit();
    const client = await clientRental.getExeUnit();
    // busybox httpd goes to the background; it lives until the activity ends.
    const started = await server.run(
      `mkdir -p /golem/work/www && echo hello from $(hostname) > /golem/work/www/index.html` +
        ` && busybox httpd -p ${HTTP_PORT} -h /golem/work/www`,
    );
    if (started.result !== "Ok") throw new Error(`httpd: ${started.stderr}`);
    // golem-js sends no Deploy hosts, so the client uses the server's VPN address.
    const fetched = await client.run(`busybox wget -q -O - http://${server.getIp()}:${HTTP_PORT}/`);
    console.log(`the client fetched over the VPN: ${String(fetched.stdout).trim()}`);
  } finally {
    await pool.destroy(serverRental);
    await pool.destroy(clientRental);
    await glm.destroyNetwork(network);
  }
} finally {
  await glm.disconnect();
}
