//! Arbitrary requests through kurad's whole router (in memory) never panic and
//! never produce a 500: every bad path, key, header or body is a 4xx.
//! Also exercises the stand-alone parsers directly.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Method, Request};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct Env {
    rt: tokio::runtime::Runtime,
    state: Arc<kurad::AppState>,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let state = rt.block_on(async {
            let store = kura_store::Store::open(
                kura_store::MemBackend::default(),
                kura_store::Config::default(),
            )
            .await
            .unwrap();
            kurad::AppState::new(store, kurad::Config::for_tests("/nonexistent".into()), None)
        });
        Env { rt, state }
    })
}

const METHODS: [Method; 6] = [
    Method::GET,
    Method::PUT,
    Method::HEAD,
    Method::POST,
    Method::DELETE,
    Method::OPTIONS,
];

fuzz_target!(|data: &[u8]| {
    // Stand-alone parsers.
    let text = String::from_utf8_lossy(data);
    let _ = kurad::keys::ccache_key(&text);
    // The HTTP/1.1 fast path's head parser and target splitter.
    if let kurad::fast::Inspect::Serve {
        head_len,
        method,
        body_len,
        ..
    } = kurad::fast::inspect(data)
    {
        assert!(head_len <= data.len());
        assert!(method == "PUT" || body_len == 0);
    }
    if let Some((ns, _route)) = kurad::fast::parse_target(&text) {
        assert!(ns.is_none_or(|n| !n.is_empty()));
    }
    let _ = kurad::body::parse_range(Some(&text), data.len() as u64);
    let _ = kurad::ac::action_result_digests(data);
    let _ = kurad::auth::Tokens::parse(&text);
    let _ = kurad::auth::Tokens::token_from_header(&text);
    let _ = kurad::config::parse_bytes(&text);
    let _ = kurad::config::parse_switch(&text);
    let meta = kurad::app::TurboMeta {
        duration: None,
        tag: Some(text.to_string()),
        team: None,
    };
    assert_eq!(
        kurad::app::TurboMeta::from_content_type(&meta.to_content_type()),
        meta
    );

    // The router: [method][path len][path][header value len][range header][body].
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let Some((&plen, rest)) = rest.split_first() else {
        return;
    };
    let (path, rest) = rest.split_at((plen as usize).min(rest.len()));
    let Some((&hlen, rest)) = rest.split_first() else {
        return;
    };
    let (hval, body) = rest.split_at((hlen as usize).min(rest.len()));
    let path = format!("/{}", String::from_utf8_lossy(path));
    let Ok(uri) = path.parse::<axum::http::Uri>() else {
        return;
    };
    let method = METHODS[m as usize % METHODS.len()].clone();
    let mut req = Request::builder().method(method).uri(uri);
    if let Ok(h) = axum::http::HeaderValue::from_bytes(hval) {
        req = req.header("range", h.clone()).header("content-type", h);
    }
    let Ok(req) = req.body(Body::from(body.to_vec())) else {
        return;
    };
    let e = env();
    let resp =
        e.rt.block_on(kurad::router(e.state.clone()).oneshot(req))
            .unwrap();
    assert!(
        resp.status() != axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "500 for {path}"
    );
});
