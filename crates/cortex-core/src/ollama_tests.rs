//! Tests for [`super`]: bodies as the `ollama` Python package sends them,
//! `keep_alive` in all its spellings, and timestamps.
#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;
use serde_json::json;

#[test]
fn python_client_chat_body_parses() {
    // What `ollama.chat(model, messages, tools=[fn], options=…, keep_alive="10m")`
    // sends (model_dump(exclude_none=True)).
    let r: ChatRequest = serde_json::from_value(json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "weather?", "images": ["aGVsbG8="]},
            {"role": "assistant", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "content": "sunny", "tool_name": "get_weather"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d",
                   "parameters": {"type": "object", "required": ["city"],
                                  "properties": {"city": {"type": "string"}}}}}],
        "stream": false,
        "options": {"temperature": 0, "top_k": 20, "num_predict": 64, "stop": ["\n"], "seed": 7,
                    "num_ctx": 2048, "mirostat": 1},
        "keep_alive": "10m",
        "logprobs": false
    }))
    .unwrap();
    assert!(!r.generation.is_stream());
    assert_eq!(r.messages[2].content, "");
    assert_eq!(
        r.messages[2].tool_calls.as_ref().unwrap()[0]
            .function
            .arguments,
        json!({"city": "Paris"})
    );
    assert_eq!(r.messages[3].tool_name.as_deref(), Some("get_weather"));
    let o = r.generation.options.unwrap();
    assert_eq!(
        (o.temperature, o.top_k, o.num_predict),
        (Some(0.0), Some(20), Some(64))
    );
    assert_eq!(o.stop.unwrap().into_vec(), vec!["\n"]);
    assert_eq!(
        r.generation.keep_alive,
        Some(KeepAlive::For(Duration::from_secs(600)))
    );
}

#[test]
fn python_client_embed_bodies_parse() {
    // `ollama.embed(model, input=[…], truncate=False, keep_alive=0)` and the
    // older `ollama.embeddings(model, prompt=…)`.
    let r: EmbedRequest = serde_json::from_value(json!({
        "model": "e", "input": ["a", "b"], "truncate": false, "keep_alive": 0,
        "options": {"num_ctx": 512}
    }))
    .unwrap();
    assert_eq!(r.input.into_vec(), vec!["a", "b"]);
    assert_eq!(
        (r.truncate, r.keep_alive),
        (Some(false), Some(KeepAlive::Unload))
    );
    let r: LegacyEmbeddingsRequest =
        serde_json::from_value(json!({"model": "e", "prompt": "hi"})).unwrap();
    assert_eq!(r.prompt.as_deref(), Some("hi"));
    let bare: LegacyEmbeddingsRequest = serde_json::from_value(json!({"model": "e"})).unwrap();
    assert!(bare.prompt.is_none());
    assert!(
        serde_json::from_value::<LegacyEmbeddingsRequest>(json!({"model": "e", "prompt": 5}))
            .is_err()
    );
}

#[test]
fn generate_defaults_to_streaming() {
    let r: GenerateRequest =
        serde_json::from_value(json!({"model": "m", "prompt": "hi", "suffix": ""})).unwrap();
    assert!(r.generation.is_stream());
    assert_eq!(r.prompt.as_deref(), Some("hi"));
    let c: ChatRequest = serde_json::from_value(json!({"model": "m"})).unwrap();
    assert!(c.generation.is_stream() && c.messages.is_empty());
}

#[test]
fn wrong_types_are_rejected() {
    for bad in [
        json!({"messages": []}),
        json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}),
        json!({"model": "m", "messages": "hi"}),
        json!({"model": "m", "options": {"temperature": "hot"}}),
        json!({"model": "m", "keep_alive": "soon"}),
        json!({"model": "m", "keep_alive": true}),
    ] {
        assert!(
            serde_json::from_value::<ChatRequest>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn keep_alive_spellings() {
    for (v, want) in [
        (json!(0), KeepAlive::Unload),
        (json!(0.0), KeepAlive::Unload),
        (json!("0"), KeepAlive::Unload),
        (json!("0s"), KeepAlive::Unload),
        (json!(-1), KeepAlive::Forever),
        (json!("-1"), KeepAlive::Forever),
        (json!("-1m"), KeepAlive::Forever),
        (json!(300), KeepAlive::For(Duration::from_secs(300))),
        (json!(1.9), KeepAlive::For(Duration::from_secs(1))),
        (json!("300"), KeepAlive::For(Duration::from_secs(300))),
        (json!("5m"), KeepAlive::For(Duration::from_secs(300))),
        (json!("1h30m"), KeepAlive::For(Duration::from_secs(5400))),
        (json!("250ms"), KeepAlive::For(Duration::from_millis(250))),
    ] {
        let got: KeepAlive = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(got, want, "{v}");
        let again: KeepAlive = serde_json::from_value(serde_json::to_value(got).unwrap()).unwrap();
        assert_eq!(again, want, "round trip of {v}");
    }
    for bad in [
        json!("soon"),
        json!("5 parsecs"),
        json!(""),
        json!([1]),
        json!(null),
    ] {
        assert!(
            serde_json::from_value::<KeepAlive>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn final_chunk_carries_stats_and_others_do_not() {
    let chunk = ChatResponse {
        model: "m".into(),
        created_at: crate::time::rfc3339(0),
        message: Message::assistant("Hi"),
        done: false,
        done_reason: None,
        stats: None,
    };
    let v = serde_json::to_value(&chunk).unwrap();
    assert_eq!(
        v,
        json!({"model": "m", "created_at": "1970-01-01T00:00:00.000Z",
               "message": {"role": "assistant", "content": "Hi"}, "done": false})
    );
    let last = ChatResponse {
        done: true,
        done_reason: Some("stop".into()),
        stats: Some(Stats {
            total_duration: 5,
            load_duration: 1,
            prompt_eval_count: 2,
            prompt_eval_duration: 3,
            eval_count: 4,
            eval_duration: 1,
        }),
        ..chunk
    };
    let v = serde_json::to_value(&last).unwrap();
    assert_eq!(v["done_reason"], "stop");
    assert_eq!(v["total_duration"], 5);
    assert_eq!(v["eval_count"], 4);
    assert_eq!(serde_json::from_value::<ChatResponse>(v).unwrap(), last);
}

proptest! {
    /// Any keep_alive number parses, and its sign decides the kind.
    #[test]
    fn keep_alive_numbers(secs in -1e6f64..1e6) {
        let k: KeepAlive = serde_json::from_value(json!(secs)).unwrap();
        match k {
            KeepAlive::Forever => prop_assert!(secs < 0.0),
            KeepAlive::Unload => prop_assert!((0.0..1.0).contains(&secs)),
            KeepAlive::For(d) => prop_assert_eq!(d.as_secs(), secs as u64),
        }
    }

    /// Arbitrary strings never panic the parser.
    #[test]
    fn keep_alive_strings_never_panic(s in "\\PC{0,12}") {
        let _ = KeepAlive::parse(&s);
    }
}
