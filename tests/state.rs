//! The state service's semantics, the same checks against the embedded
//! store and against a real Redis server (started here on a free port with
//! persistence off; `dev.sh setup` installs `redis-server`).

use std::time::{Duration, Instant};

use reflow_host_bridge::state::{Scope, StateError, StateStore};
use reflow_integration_tests::redis_server::RedisServer;
use reflow_ring::Value;
use reflow_sandbox_core::{StateOp, StateRequest};

fn req(op: StateOp, key: &str, args: Vec<Value>) -> StateRequest {
    StateRequest {
        op,
        key: key.into(),
        args,
    }
}

/// Runs every operation against `store` and checks Redis's semantics.
async fn conformance(store: &StateStore, namespace: &str) {
    let a = Scope::new(namespace, "actor-a");
    let b = Scope::new(namespace, "actor-b");
    let run = |scope: &Scope, op, key: &str, args| {
        let scope = scope.clone();
        let r = req(op, key, args);
        async move { store.apply(&scope, &r).await }
    };
    use StateOp::*;
    // get/set with JSON values; scopes do not see each other.
    assert_eq!(run(&a, Get, "k", vec![]).await, Ok(Value::None));
    let doc = Value::Map(vec![
        ("n".into(), Value::Int(1)),
        (
            "l".into(),
            Value::List(vec![Value::Str("x".into()), Value::Float(0.5)]),
        ),
    ]);
    assert_eq!(run(&a, Set, "k", vec![doc.clone()]).await, Ok(Value::None));
    assert_eq!(run(&a, Get, "k", vec![]).await, Ok(doc));
    assert_eq!(run(&b, Get, "k", vec![]).await, Ok(Value::None));
    // increment: from nothing, by an amount, on a set integer; not on text.
    assert_eq!(run(&a, Increment, "c", vec![]).await, Ok(Value::Int(1)));
    assert_eq!(
        run(&a, Increment, "c", vec![Value::Int(41)]).await,
        Ok(Value::Int(42))
    );
    assert_eq!(run(&a, Get, "c", vec![]).await, Ok(Value::Int(42)));
    run(&a, Set, "c2", vec![Value::Int(10)]).await.unwrap();
    assert_eq!(
        run(&a, Increment, "c2", vec![Value::Int(-3)]).await,
        Ok(Value::Int(7))
    );
    run(&a, Set, "t", vec![Value::Str("text".into())])
        .await
        .unwrap();
    assert!(matches!(
        run(&a, Increment, "t", vec![]).await,
        Err(StateError::BadRequest(_))
    ));
    // push/pop: a queue; the list disappears with its last item.
    assert_eq!(
        run(&a, Push, "q", vec![Value::Int(1)]).await,
        Ok(Value::Int(1))
    );
    assert_eq!(
        run(&a, Push, "q", vec![Value::Str("two".into())]).await,
        Ok(Value::Int(2))
    );
    assert!(matches!(
        run(&a, Get, "q", vec![]).await,
        Err(StateError::WrongType(_))
    ));
    assert!(matches!(
        run(&a, Push, "t", vec![Value::Int(1)]).await,
        Err(StateError::WrongType(_))
    ));
    assert_eq!(run(&a, Pop, "q", vec![]).await, Ok(Value::Int(1)));
    assert_eq!(
        run(&a, Pop, "q", vec![]).await,
        Ok(Value::Str("two".into()))
    );
    assert_eq!(run(&a, Pop, "q", vec![]).await, Ok(Value::None));
    assert_eq!(
        run(&a, Get, "q", vec![]).await,
        Ok(Value::None),
        "the empty list is gone"
    );
    // expire: on a missing key, a TTL that runs out, 0 deletes, set clears.
    assert_eq!(
        run(&a, Expire, "none", vec![Value::Int(5)]).await,
        Ok(Value::Bool(false))
    );
    run(&a, Set, "e", vec![Value::Int(1)]).await.unwrap();
    assert_eq!(
        run(&a, Expire, "e", vec![Value::Int(1)]).await,
        Ok(Value::Bool(true))
    );
    let t = Instant::now();
    while run(&a, Get, "e", vec![]).await != Ok(Value::None) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the key never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run(&a, Set, "e2", vec![Value::Int(1)]).await.unwrap();
    run(&a, Expire, "e2", vec![Value::Int(1)]).await.unwrap();
    run(&a, Set, "e2", vec![Value::Int(2)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        run(&a, Get, "e2", vec![]).await,
        Ok(Value::Int(2)),
        "set cleared the TTL"
    );
    assert_eq!(
        run(&a, Expire, "e2", vec![Value::Int(0)]).await,
        Ok(Value::Bool(true))
    );
    assert_eq!(run(&a, Get, "e2", vec![]).await, Ok(Value::None));
    // Malformed requests are the actor's error.
    for bad in [
        req(Set, "k", vec![]),
        req(Set, "k", vec![Value::Bytes(vec![1])]),
        req(Set, "k", vec![Value::Float(f64::NAN)]),
        req(Increment, "k", vec![Value::Str("1".into())]),
        req(Expire, "k", vec![]),
        req(Get, "k", vec![Value::Int(1)]),
        req(Set, "k", vec![Value::Str("x".repeat(2 << 20))]),
    ] {
        assert!(
            matches!(
                store.apply(&a, &bad).await,
                Err(StateError::BadRequest(_) | StateError::Json(_))
            ),
            "{:?} {:?} was accepted",
            bad.op,
            bad.args.len()
        );
    }
}

#[test]
fn scopes_cannot_reach_each_other() {
    // An actor id with the separator cannot alias another scope's keys.
    assert_ne!(
        Scope::new("ns", "a:b").key("c"),
        Scope::new("ns", "a").key("b:c")
    );
    assert_eq!(Scope::new("ns", "a").key("k"), "ns:a:k");
    assert_eq!(Scope::new("n:s", "a%").key("k"), "n%3As:a%25:k");
}

#[tokio::test]
async fn the_embedded_store_follows_redis_semantics() {
    conformance(&StateStore::embedded(), "test").await;
}

#[tokio::test]
async fn the_redis_store_passes_the_same_checks() {
    let server = RedisServer::start();
    let url = server.url();
    let store = StateStore::redis(&url).await.expect("connect");
    conformance(&store, "test").await;
    // The keys are where the documented Redis layout puts them, with JSON values.
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let raw: Option<String> = redis::cmd("GET")
        .arg("test:actor-a:c")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(raw.as_deref(), Some("42"));
    let doc: Option<String> = redis::cmd("GET")
        .arg("test:actor-a:k")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(doc.as_deref(), Some(r#"{"n":1,"l":["x",0.5]}"#));
}

#[tokio::test]
async fn an_unreachable_redis_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The password in the URL never shows in the error.
    match StateStore::redis(&format!("redis://:hunter2@127.0.0.1:{port}/0")).await {
        Err(StateError::Backend(m)) => {
            assert!(m.contains("cannot connect to Redis"), "{m}");
            assert!(!m.contains("hunter2"), "{m}");
            assert!(m.contains(":***@127.0.0.1"), "{m}");
        }
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("connected to nothing"),
    }
    assert!(matches!(
        StateStore::redis("http://nope").await,
        Err(StateError::Backend(_))
    ));
}
