// A browser softphone for tests/browser/test_browser_softphone.py: SIP.js (npm) in headless Chromium
// (Debian's, driven by playwright-core) registers over WSS with digest, then either calls <number> and
// hangs up once the call is established, or (<number> = "answer") answers the first call it gets and
// waits for the caller's BYE. One JSON line per step on stdout; exit status 0 when all went well.
//   node softphone.mjs <wss-url> <user> <password> <domain> <number|answer>
import { chromium } from "playwright-core";
import { readFile } from "node:fs/promises";
import { dirname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";

const [wss, user, password, domain, number] = process.argv.slice(2);
const here = dirname(fileURLToPath(import.meta.url));
const say = (step, extra = {}) => console.log(JSON.stringify({ step, ...extra }));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--ignore-certificate-errors", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
         "--no-sandbox", "--disable-features=LocalNetworkAccessChecks"],
});
let status = 1;
try {
  const page = await browser.newPage();
  page.on("console", (msg) => say("console", { text: msg.text().slice(0, 300) }));
  // The page and SIP.js's ES modules, served from this directory as if from a loopback origin (a page
  // from a public origin may not open connections to 127.0.0.1: Local Network Access).
  await page.route("http://127.0.0.1/softphone/**", async (route) => {
    const path = normalize(new URL(route.request().url()).pathname).replace(/^\/softphone\/+/, "");
    if (path === "index.html") {
      return route.fulfill({ contentType: "text/html", body:
        '<script type="module">import * as SIP from "./node_modules/sip.js/lib/index.js"; window.SIP = SIP;</script>' });
    }
    try {
      return route.fulfill({ contentType: "text/javascript", body: await readFile(join(here, path)) });
    } catch {
      return route.fulfill({ status: 404, body: "" });
    }
  });
  await page.goto("http://127.0.0.1/softphone/index.html");
  await page.waitForFunction(() => window.SIP !== undefined, null, { timeout: 10000 });
  const result = await page.evaluate(async ({ wss, user, password, domain, number }) => {
    const SIP = window.SIP;
    const steps = [];
    let incoming = null;
    const invited = new Promise((ok) => { incoming = ok; });
    const ua = new SIP.UserAgent({
      delegate: { onInvite: (invitation) => incoming(invitation) },
      uri: SIP.UserAgent.makeURI(`sip:${user}@${domain}`),
      transportOptions: { server: wss },
      authorizationUsername: user,
      authorizationPassword: password,
      logLevel: "warn",
      sessionDescriptionHandlerFactoryOptions: { peerConnectionConfiguration: { iceServers: [] } },
    });
    const within = (ms, what, promise) => Promise.race([promise, new Promise((_, no) =>
      setTimeout(() => no(new Error(`no ${what} within ${ms} ms`)), ms))]);
    try {
      await within(5000, "WebSocket", ua.start());
      steps.push("connected");
      const registerer = new SIP.Registerer(ua, { expires: 300 });
      await within(5000, "registration", new Promise((ok, no) => {
        registerer.stateChange.addListener((s) => { if (s === SIP.RegistererState.Registered) ok(); });
        registerer.register({ requestDelegate: { onReject: (r) => no(new Error(`REGISTER ${r.message.statusCode}`)) } });
      }));
      steps.push("registered");
      if (number === "answer") {
        console.log("READY");  // the test starts the caller now
        const invitation = await within(15000, "incoming call", invited);
        steps.push("ringing");
        await within(10000, "established", new Promise((ok, no) => {
          invitation.stateChange.addListener((s) => {
            if (s === SIP.SessionState.Established) ok();
            if (s === SIP.SessionState.Terminated) no(new Error("call ended before it was established"));
          });
          invitation.accept({ sessionDescriptionHandlerOptions: { constraints: { audio: true, video: false } } })
            .catch(no);
        }));
        steps.push("established");
        await within(15000, "the caller's BYE", new Promise((ok) => {
          invitation.stateChange.addListener((s) => { if (s === SIP.SessionState.Terminated) ok(); });
          if (invitation.state === SIP.SessionState.Terminated) ok();
        }));
        steps.push("hung_up_by_caller");
        await within(5000, "unregistration", registerer.unregister());
        steps.push("unregistered");
        await ua.stop();
        return { ok: true, steps };
      }
      const inviter = new SIP.Inviter(ua, SIP.UserAgent.makeURI(`sip:${number}@${domain}`), {
        sessionDescriptionHandlerOptions: { constraints: { audio: true, video: false } },
      });
      await within(15000, "answer", new Promise((ok, no) => {
        inviter.stateChange.addListener((s) => {
          if (s === SIP.SessionState.Established) ok();
          if (s === SIP.SessionState.Terminated) no(new Error("call terminated before it was established"));
        });
        inviter.invite({ requestDelegate: { onReject: (r) => no(new Error(`INVITE ${r.message.statusCode}`)) } })
          .catch(no);
      }));
      steps.push("established");
      await inviter.bye();
      steps.push("hung_up");
      await within(5000, "unregistration", registerer.unregister());
      steps.push("unregistered");
      await ua.stop();
      return { ok: true, steps };
    } catch (e) {
      return { ok: false, steps, error: String(e && e.message || e) };
    }
  }, { wss, user, password, domain, number });
  say("result", result);
  status = result.ok ? 0 : 1;
} catch (e) {
  say("error", { error: String(e && e.message || e) });
} finally {
  await browser.close();
}
process.exit(status);
