//! `reflow-sandbox serve` as a client meets it: a real host process on
//! loopback (real guests on /dev/kvm), driven by Reflow 0.2.1's own
//! `DynASBClient` and `WebSocketScriptActor`, by a raw WebSocket speaking
//! the same JSON-RPC, and by clients it must refuse. Needs /dev/kvm and the
//! guest images (`./dev.sh test` provides both); the host serving process
//! workers needs only the images.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reflow_actor::message::Message;
use reflow_actor::{Actor, ActorConfig, ActorContext, ActorLoad, MemoryState};
use reflow_network::script_discovery::types::DiscoveredScriptActor;
use reflow_network::websocket_rpc::{
    DynASBClient, DynASBConfig, WebSocketRpcClient, WebSocketScriptActor,
};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as Frame;

mod common;
use common::{kvm, text};

const ALICE: &str = "a11ce0000000000000000000000000000000000000000000000000000000a11c";
const BOB: &str = "b0b0000000000000000000000000000000000000000000000000000000000b0b";

const DOUBLE: &str = r#"from reflow import actor


@actor(name="Double", inports=["input"], outports=["output", "seen"])
async def double(context):
    x = context.get_input("input")
    seen = await context.state.increment("seen")
    await context.send_output("seen", seen)
    return {"output": x * 2}
"#;

const OFFSET: &str = r#"const metadata = {
  component: "Offset",
  inports: ["in"],
  outports: ["out"],
};

async function process(context) {
  await context.sendOutput("out", context.getInput("in") + context.getConfig().amount);
}

module.exports = { metadata, process };
"#;

/// A `serve` process on a free loopback port, with its own cache
/// directory and pools, killed when dropped.
struct Host {
    child: Child,
    addr: String,
    stderr: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Host {
    /// Starts a host with ALICE's and BOB's tokens and `extra` flags, and
    /// waits until it says it serves (the runtimes' goldens may be made
    /// first: that is progress, reported on stderr, and is waited for).
    fn start(extra: &[&str]) -> Host {
        Host::start_with(extra, &[])
    }

    /// As [`Host::start`], with `env` set for the host.
    fn start_with(extra: &[&str], env: &[(&str, &str)]) -> Host {
        for var in ["REFLOW_KERNEL", "REFLOW_INITRAMFS", "REFLOW_PYTHON_IMAGE"] {
            assert!(
                std::env::var_os(var).is_some(),
                "{var} is not set: run the tests with ./dev.sh test"
            );
        }
        // The host's own cache directory, as on a machine of its own: its
        // golden snapshots are hard links to the shared cache's (made once,
        // never written again), so no host makes them twice; whatever a
        // host adds (component goldens) stays its own.
        let shared = reflow_vmm::cache_root();
        let dir = tempfile::Builder::new()
            .prefix(".reflow-serve-test-")
            .tempdir_in(shared.parent().expect("the cache has a parent"))
            .unwrap();
        let cache = dir.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        if shared.join("snapshots").is_dir() {
            let linked = Command::new("cp")
                .arg("-al")
                .arg(shared.join("snapshots"))
                .arg(cache.join("snapshots"))
                .status()
                .unwrap();
            assert!(linked.success(), "cannot link the shared goldens");
        }
        let tokens = dir.path().join("tokens");
        private_file(&tokens, &format!("alice {ALICE}\nbob {BOB}\n"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_reflow-sandbox"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--quiet",
                "--preload",
                "1",
            ])
            .arg("--token-file")
            .arg(&tokens)
            .args(extra)
            .envs(env.iter().copied())
            .env_remove("REDIS_URL")
            .env("REFLOW_CACHE_DIR", &cache)
            .stderr(Stdio::piped())
            .spawn()
            .expect("reflow-sandbox serve starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let log = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("serving on ").nth(1) {
                    let url = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(url);
                }
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(url) => break url,
                Err(_) => {
                    if let Some(status) = child.try_wait().unwrap() {
                        panic!("serve exited ({status}):\n{}", stderr.lock().unwrap());
                    }
                }
            }
        };
        let addr = addr
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string();
        Host {
            child,
            addr,
            stderr,
            _dir: dir,
        }
    }

    fn api(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Reflow's own client for this host, as alice. It sends no headers:
    /// the token rides in the URL, which reqwest sends as Basic
    /// credentials.
    fn client(&self) -> DynASBClient {
        let ip_port = &self.addr;
        DynASBClient::new(DynASBConfig {
            api_url: format!("http://alice:{ALICE}@{ip_port}"),
            ws_url: format!("ws://{ip_port}/ws"),
            redis_url: String::new(),
        })
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `text` to `path`, readable by its owner only (as token files
/// must be).
fn private_file(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// `GET url` with ALICE's token, as JSON.
async fn get_json(http: &reqwest::Client, url: String) -> Value {
    http.get(url)
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Reflow's description of a script actor, as its discovery makes one.
fn discovered(
    component: &str,
    runtime: &str,
    inport: &str,
    outport: &str,
) -> DiscoveredScriptActor {
    let port = |name: &str| {
        json!({"name": name, "port_type": {"type": "any"}, "required": false,
               "description": "", "default": null})
    };
    serde_json::from_value(json!({
        "component": component,
        "description": "",
        "file_path": format!("{component}.script"),
        "runtime": runtime,
        "inports": [port(inport)],
        "outports": [port(outport)],
        "workspace_metadata": {
            "namespace": "default", "version": "1", "author": null, "dependencies": [],
            "runtime_requirements": {"runtime_version": "", "memory_limit": "256M",
                                     "cpu_limit": null, "timeout": 30, "env_vars": {}},
            "config_schema": null, "tags": [], "category": null, "source_hash": "",
            "last_modified": "2026-01-01T00:00:00Z"
        }
    }))
    .expect("Reflow's DiscoveredScriptActor")
}

/// Runs one message through an actor's behavior, as Reflow's actor loop
/// does.
async fn behave(
    actor: &dyn Actor,
    inputs: Vec<(&str, Message)>,
) -> anyhow::Result<HashMap<String, Message>> {
    let payload = inputs
        .into_iter()
        .map(|(p, m)| (p.to_string(), m))
        .collect();
    let ctx = ActorContext::new(
        payload,
        actor.get_outports(),
        Arc::new(parking_lot::Mutex::new(MemoryState::default())),
        ActorConfig::default(),
        Arc::new(ActorLoad::new(0)),
    );
    (actor.get_behavior())(ctx).await
}

async fn ws(
    url: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("a WebSocket session")
        .0
}

/// Sends `request` and returns the frames up to its response (the one
/// with its id).
async fn exchange<S>(ws: &mut S, request: Value) -> Vec<Value>
where
    S: futures_util::Sink<Frame>
        + futures_util::Stream<Item = Result<Frame, tokio_tungstenite::tungstenite::Error>>
        + Unpin,
    <S as futures_util::Sink<Frame>>::Error: std::fmt::Debug,
{
    let want = request["id"].clone();
    ws.send(Frame::text(request.to_string())).await.unwrap();
    let mut got = Vec::new();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(120), ws.next())
            .await
            .expect("an answer within 120 s")
            .expect("the session is open")
            .expect("a frame");
        let Frame::Text(text) = frame else { continue };
        let v: Value = serde_json::from_str(text.as_str()).unwrap();
        let done = v.get("id") == Some(&want);
        got.push(v);
        if done {
            return got;
        }
    }
}

fn process(id: u64, payload: Value, config: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "process", "params": {
        "payload": payload, "config": config,
        "state": {"namespace": "default", "actor_id": "n1", "redis_url": "redis://ignored:1"},
        "actor_id": "n1", "timestamp": 0}})
}

/// Deploys the JavaScript `OFFSET` on `host` and runs one message with
/// the node's config: its output arrives as a notification before the
/// response.
async fn javascript_offset(client: &mut DynASBClient, host: &Host) {
    let g = client
        .deploy("offset", "javascript", OFFSET, "process", None, None)
        .await
        .unwrap_or_else(|e| panic!("deploy: {e:#}\n{}", host.log()));
    let mut raw = ws(&format!("ws://{}/ws/{}", host.addr, g.function_id)).await;
    let frames = exchange(
        &mut raw,
        process(1, json!({"in": 1}), json!({"amount": 10})),
    )
    .await;
    assert_eq!(frames[0]["params"]["data"], 11, "{frames:?}");
    assert_eq!(frames[1]["result"], json!({"outputs": {}}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflows_own_client_deploys_and_runs_scripts() {
    if !kvm() {
        return;
    }
    let host = Host::start(&[]);
    let (ip_port, api) = (host.addr.clone(), host.api());
    let mut client = host.client();
    let f = client
        .deploy("double", "python", DOUBLE, "double", None, Some(30))
        .await
        .unwrap_or_else(|e| panic!("deploy: {e:#}\n{}", host.log()));
    let ready = client
        .wait_until_ready(
            &f.function_id,
            Duration::from_secs(10),
            Duration::from_millis(100),
        )
        .await
        .unwrap();
    assert_eq!(format!("{ready:?}"), "Ready");
    let actor = client
        .create_actor(&f, discovered("Double", "Python", "input", "output"))
        .await
        .unwrap();
    for (x, want) in [(21, 42), (-4, -8)] {
        let out = behave(&actor, vec![("input", Message::Integer(x))])
            .await
            .unwrap_or_else(|e| panic!("process: {e:#}\n{}", host.log()));
        assert!(
            matches!(out.get("output"), Some(Message::Integer(n)) if *n == want),
            "{out:?}"
        );
    }
    // A failing message is Reflow's error, with the guest's reason.
    let err = behave(&actor, vec![("input", Message::from(json!({"a": 1})))])
        .await
        .expect_err("a dict times 2 fails");
    let err = format!("{err:#}");
    assert!(err.contains("TypeError"), "{err}");

    // The status, as Reflow reads it and as the issue names its fields.
    let http = reqwest::Client::new();
    let status = get_json(&http, format!("{api}/api/v1/functions/{}", f.function_id)).await;
    assert_eq!(status["state"], "ready");
    assert_eq!(status["invocationCount"], 3, "{status}");
    assert_eq!(status["inports"], json!(["input"]));
    // Bob cannot see Alice's function.
    let bobs = http
        .get(format!("{api}/api/v1/functions/{}", f.function_id))
        .bearer_auth(BOB)
        .send()
        .await
        .unwrap();
    assert_eq!(bobs.status(), 404);

    // A raw session: outputs sent while a call runs arrive as `output`
    // notifications before its response; state is the session's node's.
    let mut raw = ws(&format!("ws://{ip_port}/ws/{}", f.function_id)).await;
    let frames = exchange(&mut raw, process(1, json!({"input": 5}), json!({}))).await;
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0]["method"], "output");
    assert_eq!(frames[0]["params"]["port"], "seen");
    assert_eq!(frames[0]["params"]["data"], 1);
    assert_eq!(frames[1]["id"], 1);
    assert_eq!(frames[1]["result"], json!({"outputs": {"output": 10}}));
    let frames = exchange(&mut raw, process(2, json!({"input": 6}), json!({}))).await;
    assert_eq!(frames[0]["params"]["data"], 2, "{frames:?}");
    // Protocol mistakes are answered on the session, which goes on.
    raw.send(Frame::text("{not json")).await.unwrap();
    let frames = exchange(
        &mut raw,
        json!({"jsonrpc": "2.0", "id": 3, "method": "eval"}),
    )
    .await;
    assert_eq!(frames[0]["error"]["code"], -32700, "{frames:?}");
    assert_eq!(frames[1]["error"]["code"], -32601, "{frames:?}");
    let frames = exchange(&mut raw, process(4, json!({"input": "ab"}), json!({}))).await;
    assert_eq!(
        frames.last().unwrap()["result"]["outputs"]["output"],
        "abab"
    );

    // JavaScript, with the node's config.
    if std::env::var_os("REFLOW_NODE_IMAGE").is_some() {
        javascript_offset(&mut client, &host).await;
    }

    // Undeployed: the open session refuses further calls.
    client.undeploy(&f.function_id).await.unwrap();
    let frames = exchange(&mut raw, process(5, json!({"input": 1}), json!({}))).await;
    let error = frames.last().unwrap()["result"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.contains("was undeployed"), "{frames:?}");
    let gone = ws_refused(&format!("ws://{ip_port}/ws/{}", f.function_id)).await;
    assert_eq!(gone, 404);
}

/// The HTTP status a refused WebSocket handshake got.
async fn ws_refused(url: &str) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    ws_refused_with(url.into_client_request().unwrap()).await
}

async fn ws_refused_with(req: tokio_tungstenite::tungstenite::handshake::client::Request) -> u16 {
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
        Err(e) => panic!("not an HTTP refusal: {e}"),
        Ok(_) => panic!("the handshake was accepted"),
    }
}

/// Reflow 0.2.1's `WebSocketScriptActor` cannot be a node of a Reflow
/// network: it has no `create_instance` (the network calls it for every
/// node, and the trait's default panics), and its `get_inports` makes a new
/// channel on every call, so what a network would send it goes nowhere.
/// Its behavior (one message per call) works, and is what the test above
/// drives. If this test fails, Reflow fixed it: update docs/serve.md.
#[tokio::test]
async fn reflows_script_actor_cannot_be_a_network_node_as_documented() {
    let rpc = Arc::new(WebSocketRpcClient::new("ws://127.0.0.1:9/ws/x".into()));
    let actor =
        WebSocketScriptActor::new(discovered("X", "Python", "in", "out"), rpc, String::new()).await;
    let (a, b) = (actor.get_inports(), actor.get_inports());
    a.0.send(HashMap::new()).unwrap();
    assert!(
        b.1.try_recv().is_err(),
        "get_inports now returns one channel"
    );
    let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| actor.create_instance()));
    assert!(made.is_err(), "create_instance no longer panics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_refuses_what_it_must_and_stays_up() {
    if !kvm() {
        return;
    }
    let host = Host::start(&["--max-functions", "3", "--max-sessions", "2"]);
    let api = host.api();
    let http = reqwest::Client::new();
    let deploy_body = json!({"name": "double", "runtime": "python", "code": DOUBLE,
                             "handler": "double", "timeout_seconds": 30});
    let post = |token: Option<&str>, body: Vec<u8>| {
        let mut req = http
            .post(format!("{api}/api/v1/functions"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            (status, v)
        }
    };
    let body = |v: &Value| serde_json::to_vec(v).unwrap();
    // Each refusal: the body's changes, the status, and what its error says.
    let wrong_token = ALICE.replace('a', "b");
    let refusals: Vec<(Option<&str>, Vec<u8>, u16, &str)> = vec![
        (None, body(&deploy_body), 401, "needs a token"),
        (
            Some(&wrong_token),
            body(&deploy_body),
            401,
            "the token is not valid on this host",
        ),
        (
            Some(ALICE),
            vec![b' '; 2 << 20],
            413,
            "larger than 1048576 bytes",
        ),
        (
            Some(ALICE),
            b"{\"name\":".to_vec(),
            400,
            "the deploy request: ",
        ),
    ];
    let changed = |key: &str, value: Value| {
        let mut b = deploy_body.clone();
        b[key] = value;
        body(&b)
    };
    let bad_script = json!("@actor(name='X', inports=['a'] outports=[])\ndef x(c): pass\n");
    let refusals = refusals.into_iter().chain([
        (
            Some(ALICE),
            changed("runtime", json!("ruby")),
            400,
            "unknown runtime \"ruby\"",
        ),
        (
            Some(ALICE),
            changed("code", bad_script),
            400,
            "the script: double.py:1:",
        ),
        (
            Some(ALICE),
            changed("dependencies", json!({"numpy": "1"})),
            400,
            "dependencies cannot be installed",
        ),
        (
            Some(ALICE),
            changed("timeout_seconds", json!(100_000)),
            400,
            "allows 1 to 300",
        ),
        (
            Some(ALICE),
            changed("name", json!("../x")),
            400,
            "name \"../x\"",
        ),
    ]);
    for (token, request, status, says) in refusals {
        let (s, v) = post(token, request).await;
        assert_eq!((s, &v["success"]), (status, &json!(false)), "{v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{says}: {v}");
    }

    // A flood of deploys: three land, the rest are refused as such.
    let mut ids = Vec::new();
    let mut refused = 0;
    for _ in 0..10 {
        let (s, v) = post(Some(ALICE), body(&deploy_body)).await;
        match s {
            200 => ids.push(v["function_id"].as_str().unwrap().to_string()),
            429 => {
                refused += 1;
                assert!(
                    v["error"].as_str().unwrap().contains("--max-functions"),
                    "{v}"
                );
            }
            _ => panic!("{s}: {v}"),
        }
    }
    assert_eq!((ids.len(), refused), (3, 7));
    // Bob's limit is his own.
    let (s, _) = post(Some(BOB), body(&deploy_body)).await;
    assert_eq!(s, 200);

    // Sessions: an unknown id, a wrong token, and one session too many.
    let ws_url = |id: &str| format!("ws://{}/ws/{id}", host.addr);
    assert_eq!(ws_refused(&ws_url(&"0".repeat(32))).await, 404);
    {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = ws_url(&ids[0]).into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {BOB}").parse().unwrap());
        assert_eq!(
            ws_refused_with(req).await,
            404,
            "Bob's token on Alice's function"
        );
    }
    let mut one = ws(&ws_url(&ids[0])).await;
    let _two = ws(&ws_url(&ids[1])).await;
    assert_eq!(ws_refused(&ws_url(&ids[2])).await, 429);
    // An oversized frame ends that session only.
    let huge = "x".repeat(17 << 20);
    let _ = one.send(Frame::text(huge)).await;
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match one.next().await {
                None | Some(Err(_)) | Some(Ok(Frame::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the oversized session was not closed");
    drop(one);

    // Still up; nothing ran.
    let started = Instant::now();
    let health: Value = loop {
        if let Ok(r) = http.get(format!("{api}/health")).send().await {
            break r.json().await.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            host.log()
        );
    };
    assert_eq!(health["status"], "ok");
    assert_eq!(health["functions"], 4);
    assert!(health["max_vms"].as_u64() >= Some(20), "{health}");
    assert!(
        health["live_vms"].as_u64() >= Some(1),
        "the pool's preloaded clone: {health}"
    );
    let list = get_json(&http, format!("{api}/api/v1/functions")).await;
    let list = list["functions"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert!(list.iter().all(|f| f["invocationCount"] == 0), "{list:?}");
    assert!(!host.log().contains(ALICE), "a token was printed");
}

#[test]
fn serve_refuses_to_start_without_tokens_or_off_loopback() {
    let serve = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_reflow-sandbox"))
            .arg("serve")
            .args(args)
            .env_remove("REFLOW_SERVE_TOKENS")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        text(&out.stderr)
    };
    let e = serve(&["--listen", "127.0.0.1:0"]);
    assert!(e.contains("needs its clients' tokens: --token-file"), "{e}");
    let e = serve(&["--listen", "0.0.0.0:0", "--insecure-no-auth"]);
    assert!(e.contains("only allowed on a loopback address"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, ALICE).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = serve(&[
        "--listen",
        "127.0.0.1:0",
        "--token-file",
        tokens.to_str().unwrap(),
    ]);
    assert!(e.contains("make it 0600"), "{e}");
}

/// On a host without /dev/kvm (hidden by `REFLOW_NO_KVM=1`), `serve`
/// refuses to start with VMs, naming `--isolation process`; with it, a
/// deployed function runs in a process worker, and killing the host
/// (SIGKILL) ends its workers. Needs no /dev/kvm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_kvm_serve_runs_process_workers_only_when_asked() {
    let out = Command::new(env!("CARGO_BIN_EXE_reflow-sandbox"))
        .args(["serve", "--listen", "127.0.0.1:0", "--insecure-no-auth"])
        .env(reflow_vmm::NO_KVM_ENV, "1")
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(
        e.contains("this host cannot run VMs (") && e.contains("`serve --isolation process`"),
        "{e}"
    );

    let host = Host::start_with(
        &["--isolation", "process"],
        &[(reflow_vmm::NO_KVM_ENV, "1")],
    );
    assert!(
        host.log().contains("WARNING: --isolation process"),
        "{}",
        host.log()
    );
    let ip_port = host.addr.clone();
    let mut client = host.client();
    let f = client
        .deploy("double", "python", DOUBLE, "double", None, Some(30))
        .await
        .unwrap_or_else(|e| panic!("deploy: {e:#}\n{}", host.log()));
    let mut raw = ws(&format!("ws://{ip_port}/ws/{}", f.function_id)).await;
    let frames = exchange(&mut raw, process(1, json!({"input": 5}), json!({}))).await;
    assert_eq!(
        frames.last().unwrap()["result"],
        json!({"outputs": {"output": 10}}),
        "{frames:?}\n{}",
        host.log()
    );
    if std::env::var_os("REFLOW_NODE_IMAGE").is_some() {
        javascript_offset(&mut client, &host).await;
    }

    // A host killed outright takes its workers with it.
    let workers = children(host.child.id());
    assert!(!workers.is_empty(), "no process worker under the host");
    drop(host);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let alive: Vec<u32> = workers
            .iter()
            .copied()
            .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
            .collect();
        if alive.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "process workers {alive:?} outlived their host by 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The processes whose parent is `pid`, and theirs, and so on.
fn children(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let p: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            // After the command's closing parenthesis: state, then ppid.
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((p, ppid))
        })
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_the_api_with_the_given_certificate() {
    if !kvm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=reflow-test"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (apt-get install openssl) makes the test certificate");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let host = Host::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(host.log().contains("serving on https://"), "{}", host.log());
    let root = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
    let https = reqwest::Client::builder()
        .add_root_certificate(root)
        .build()
        .unwrap();
    let r = https
        .post(format!("https://{}/api/v1/functions", host.addr))
        .bearer_auth(ALICE)
        .json(&json!({"name": "d", "runtime": "python", "code": DOUBLE, "handler": "d"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Our own client over TLS, trusting the host's certificate: a graph
    // runs on it, and `hosts` finds it up.
    let url = format!("https://{}", host.addr);
    let out = Command::new(env!("CARGO_BIN_EXE_reflow-sandbox"))
        .args(["hosts", "--hosts", &url, "--host-ca"])
        .arg(&cert)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let graph = fleet_graph(dir.path(), 3);
    let token = dir.path().join("token");
    private_file(&token, ALICE);
    let run = |ca: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_reflow-sandbox"));
        cmd.arg("run")
            .arg(&graph)
            .args([
                "--quiet",
                "--timeout",
                "300",
                "--hosts",
                &url,
                "--host-token-file",
            ])
            .arg(&token)
            .env_remove("REFLOW_HOST_CA");
        if ca {
            cmd.arg("--host-ca").arg(&cert);
        }
        cmd.output().unwrap()
    };
    let out = run(true);
    let mut lines: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    lines.sort();
    assert_eq!(
        lines,
        ["s.out: \"2\"", "s.out: \"4\"", "s.out: \"6\""],
        "{}",
        text(&out.stderr)
    );
    // Without the CA, the host's certificate is not trusted: each message
    // fails, saying why.
    let out = run(false);
    assert_eq!(out.status.code(), Some(2));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("no sandbox host could take it"), "{stdout}");
    // Plain HTTP to a TLS port gets nothing.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/health", host.addr))
        .timeout(Duration::from_secs(15))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}

/// A private redis-server on a free port, killed when dropped.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (./dev.sh setup installs it)");
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "redis-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis {
            child,
            port,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// `redis-cli` run against it, its output.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        text(&out.stdout)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `Range(n) -> Double (Python, 4 ms each) -> Count (Python, state) ->
/// Format`, each
/// script node's error port into a Format of its own, written in `dir`.
fn fleet_graph(dir: &std::path::Path, n: u32) -> std::path::PathBuf {
    std::fs::write(
        dir.join("double.actor.py"),
        "import time\n\n@actor(name='Double', inports=['input'], outports=['output'])\n\
         def double(context):\n    time.sleep(0.004)\n\
         \x20   return {'output': context.get_input('input') * 2}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("count.actor.py"),
        "@actor(name='Count', inports=['input'], outports=['out'])\n\
         async def count(context):\n    await context.state.increment('seen')\n\
         \x20   return {'out': context.get_input('input')}\n",
    )
    .unwrap();
    let edge = |n: &str, p: &str| {
        json!({"nodeId": n, "portName": p, "portId": p, "expose": false,
               "portType": {"type": "any"}})
    };
    let script = |file: &str| {
        json!({"componentSpec": {"type": "script",
               "script": {"runtime": "python", "source": "file", "path": file}}})
    };
    let graph = json!({
        "caseSensitive": true,
        "properties": {"name": "fleet"},
        "processes": {
            "n": {"id": "n", "component": "Range"},
            "d": {"id": "d", "component": "Double", "metadata": script("double.actor.py")},
            "c": {"id": "c", "component": "Count", "metadata": script("count.actor.py")},
            "s": {"id": "s", "component": "Format"},
            "ed": {"id": "ed", "component": "Format"},
            "ec": {"id": "ec", "component": "Format"},
        },
        "connections": [
            {"from": edge("n", "count"), "to": edge("n", "count"), "data": n},
            {"from": edge("n", "out"), "to": edge("d", "input")},
            {"from": edge("d", "output"), "to": edge("c", "input")},
            {"from": edge("c", "out"), "to": edge("s", "in")},
            {"from": edge("d", "error"), "to": edge("ed", "in")},
            {"from": edge("c", "error"), "to": edge("ec", "in")},
        ],
    });
    let path = dir.join("graph.json");
    std::fs::write(&path, graph.to_string()).unwrap();
    path
}

/// Two hosts sharing a Redis, named to the client in a list; a graph's
/// two script nodes spread over them; one host killed mid-stream. Every
/// input is answered exactly once (an output, or, for the calls in flight
/// on the lost host, an error naming it), the moved node's state goes on
/// counting in Redis, and the graph finishes.
#[test]
fn a_graph_spread_over_two_hosts_survives_losing_one() {
    if !kvm() {
        return;
    }
    fleet(false);
}

/// The same with the hosts announced in the Redis registry: `hosts` lists
/// both, the client finds them there, and the killed host's entry expires.
#[test]
fn a_fleet_found_in_its_registry_survives_losing_a_host() {
    if !kvm() {
        return;
    }
    fleet(true);
}

/// `reflow-sandbox hosts --hosts H`: its exit status and table.
fn hosts(list: &str) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reflow-sandbox"))
        .args(["hosts", "--hosts", list])
        .output()
        .unwrap();
    (out.status.code(), text(&out.stdout) + &text(&out.stderr))
}

fn fleet(registry: bool) {
    const N: usize = 600;
    let redis = Redis::start();
    let url = redis.url();
    let flags: Vec<&str> = if registry {
        vec!["--state", &url, "--announce", &url]
    } else {
        vec!["--state", &url]
    };
    let mut a = Host::start(&flags);
    let b = Host::start(&flags);
    let list = if registry {
        url.clone()
    } else {
        format!("http://{},http://{}", a.addr, b.addr)
    };
    let (code, table) = hosts(&list);
    assert_eq!(code, Some(0), "{table}");
    for h in [&a, &b] {
        assert!(
            table.contains(&format!("http://{}", h.addr)) && table.contains(" up "),
            "{table}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let graph = fleet_graph(dir.path(), N as u32);
    let token = dir.path().join("token");
    private_file(&token, &format!("# alice\n{ALICE}\n"));
    let mut run = Command::new(env!("CARGO_BIN_EXE_reflow-sandbox"))
        .arg("run")
        .arg(&graph)
        .args(["--quiet", "--timeout", "600", "--hosts"])
        .arg(&list)
        .arg("--host-token-file")
        .arg(&token)
        .env_remove("REFLOW_KERNEL")
        .env_remove("REDIS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = run.stdout.take().unwrap();
    let stderr = run.stderr.take().unwrap();
    let err_log = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s).unwrap();
        s
    });
    let mut lines = Vec::new();
    let mut killed_at = None;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if line.starts_with("s.out: ") && killed_at.is_none() && lines.len() >= N / 4 {
            let _ = a.child.kill();
            let _ = a.child.wait();
            killed_at = Some(lines.len());
        }
        lines.push(line);
    }
    let status = run.wait().unwrap();
    let stderr = err_log.join().unwrap();
    let killed_at = killed_at.expect("the stream ended before a quarter of it was out");
    let outputs: Vec<&String> = lines.iter().filter(|l| l.starts_with("s.out: ")).collect();
    let errors: Vec<&String> = lines.iter().filter(|l| !l.starts_with("s.out: ")).collect();
    assert_eq!(outputs.len() + errors.len(), N, "{errors:?}\n{stderr}");
    let mut values: Vec<i64> = outputs
        .iter()
        .map(|l| l["s.out: ".len()..].trim_matches('"').parse().unwrap())
        .collect();
    values.sort_unstable();
    values.dedup();
    assert_eq!(values.len(), outputs.len(), "an input was answered twice");
    assert!(values
        .iter()
        .all(|v| v % 2 == 0 && (2..=2 * N as i64).contains(v)));
    // Each node keeps up to 32 calls in flight on its host: those on the
    // lost host fail (the scripts take a few milliseconds each, so the
    // host killed a quarter of the way in has some).
    assert!(!errors.is_empty(), "the lost host had nothing in flight");
    assert!(
        errors.len() <= 2 * 32,
        "more errors than calls in flight: {errors:?}"
    );
    for e in &errors {
        assert!(
            e.contains(&format!("sandbox host {} was lost", a.addr)),
            "an error that does not name the lost host: {e}"
        );
    }
    assert!(
        lines.len() > killed_at + 1,
        "nothing ran after the host was lost"
    );
    assert_eq!(
        status.code(),
        Some(if errors.is_empty() { 0 } else { 2 }),
        "{stderr}"
    );
    // The Count node's state: one increment per message it ran, on
    // whichever host, in the shared Redis.
    eprintln!(
        "{N} inputs: {} outputs, {} errors, host {} killed after {killed_at} lines; {errors:?}",
        outputs.len(),
        errors.len(),
        a.addr
    );
    let keys = redis.cli(&["--scan", "--pattern", "*:seen"]);
    let key = keys
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no state in Redis: {keys}"));
    let seen: usize = redis
        .cli(&["GET", key])
        .trim()
        .trim_matches('"')
        .parse()
        .unwrap();
    let c_errors = errors.iter().filter(|e| e.starts_with("ec.out")).count();
    assert!(
        (outputs.len()..=outputs.len() + c_errors).contains(&seen),
        "seen {seen}, outputs {}, Count errors {c_errors}",
        outputs.len()
    );
    // The lost host: down in a list; gone from the registry once its key
    // expires.
    let started = Instant::now();
    loop {
        let (code, table) = hosts(&list);
        let listed = table.contains(&format!("http://{}", a.addr));
        if registry && !listed && code == Some(0) {
            break;
        }
        if !registry {
            assert!(listed && table.contains("down"), "{table}");
            assert_eq!(code, Some(2), "{table}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the killed host is still announced: {table}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(b);
}
