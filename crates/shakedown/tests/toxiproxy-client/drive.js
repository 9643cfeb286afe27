// Drives a Toxiproxy-compatible server with toxiproxy-node-client, a client library we did not
// write: create a proxy → add a toxic → observe it on a real connection → update it → bad
// input is refused → take the proxy down and up → remove the toxic → reset → delete.
// Usage: node drive.js http://127.0.0.1:PORT   (only loopback is ever used)
// Prints one JSON line of what it measured; exits non-zero on the first failed check.
"use strict";
const net = require("net");
const { Toxiproxy, ToxiproxyError } = require("toxiproxy-node-client");

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

// Round trip of one message on a fresh connection, in ms; rejects if it cannot connect.
function roundTrip(port, msg = "ping") {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const s = net.connect({ host: "127.0.0.1", port }, () => s.write(msg));
    let got = "";
    const timer = setTimeout(() => { s.destroy(); reject(new Error("no echo in 5 s")); }, 5000);
    s.on("data", (d) => {
      got += d.toString();
      if (got.length >= msg.length) {
        clearTimeout(timer);
        s.end();
        resolve(Number(process.hrtime.bigint() - start) / 1e6);
      }
    });
    s.on("error", (e) => { clearTimeout(timer); reject(e); });
  });
}

async function main() {
  const api = process.argv[2];
  check(/^http:\/\/(127\.\d+\.\d+\.\d+|\[::1\]|localhost):\d+$/.test(api || ""), "a loopback API URL");
  const echo = net.createServer((s) => s.pipe(s));
  await new Promise((r) => echo.listen(0, "127.0.0.1", r));
  const upstream = `127.0.0.1:${echo.address().port}`;
  const out = {};
  try {
    const toxiproxy = new Toxiproxy(api);
    out.version = JSON.parse(await toxiproxy.getVersion()).version;

    const proxy = await toxiproxy.createProxy({ name: "cache", listen: "127.0.0.1:0", upstream });
    const port = Number(proxy.listen.split(":").pop());
    check(port > 0 && proxy.enabled === true, "created with a real port");
    out.direct_ms = await roundTrip(port);

    const toxic = await proxy.addToxic({
      name: "slow", type: "latency", stream: "downstream", toxicity: 1,
      attributes: { latency: 200, jitter: 0 },
    });
    check(toxic.name === "slow" && toxic.attributes.latency === 200, "toxic echoed back");
    out.latency_ms = await roundTrip(port);
    check(out.latency_ms >= 200, `latency applied (${out.latency_ms} ms)`);

    const updated = await toxic.update({ attributes: { latency: 300 }, toxicity: 1 });
    check(updated.attributes.latency === 300, "toxic updated");
    out.updated_ms = await roundTrip(port);
    check(out.updated_ms >= 300, `updated latency applied (${out.updated_ms} ms)`);

    const all = await toxiproxy.getAll();
    check(all.cache && all.cache.upstream === upstream, "listed");
    const fetched = await (await toxiproxy.get("cache")).getToxic("slow");
    check(fetched.attributes.latency === 300, "toxic read back");

    let refused = null;
    try {
      await proxy.addToxic({ name: "bad", type: "no_such_toxic", stream: "downstream", toxicity: 1, attributes: {} });
    } catch (e) {
      refused = e;
    }
    check(refused instanceof ToxiproxyError && /400/.test(refused.message), "unknown toxic type refused with 400");
    let duplicate = null;
    try {
      await toxiproxy.createProxy({ name: "cache", listen: "127.0.0.1:0", upstream });
    } catch (e) {
      duplicate = e;
    }
    check(duplicate instanceof ToxiproxyError && /409/.test(duplicate.message), "duplicate proxy refused with 409");

    const down = await proxy.update({ enabled: false });
    check(down.enabled === false, "disabled");
    let failed = false;
    try { await roundTrip(port); } catch (e) { failed = true; }
    check(failed, "down: nothing listens");
    await toxiproxy.reset();
    const after = await toxiproxy.get("cache");
    check(after.enabled === true, "reset enables every proxy");
    out.after_reset_ms = await roundTrip(port);
    check(out.after_reset_ms < 200, `reset removed the toxic (${out.after_reset_ms} ms)`);

    const again = await proxy.addToxic({ name: "cut", type: "limit_data", stream: "downstream", toxicity: 1, attributes: { bytes: 2 } });
    await again.remove();
    out.after_remove_ms = await roundTrip(port);

    const populated = await toxiproxy.populate([{ name: "db", listen: "127.0.0.1:0", upstream }]);
    check(populated.db && populated.db.enabled === true, "populate");
    await populated.db.remove();
    await proxy.remove();
    const left = await toxiproxy.getAll();
    check(!left.cache && !left.db, "removed");
    out.ok = true;
  } finally {
    echo.close();
  }
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
