//! Tests of the fleet state rules.

use super::*;
use crate::testing::status;
use cortex_core::config::ModelsFile;

fn fleet(models_toml: &str) -> FleetState {
    let models = ModelsFile::from_toml(models_toml, "models.toml").unwrap();
    FleetState::new(
        vec![
            NodeInfo::new("a", "http://127.0.0.1:1", None),
            NodeInfo::new("b", "http://127.0.0.1:2/", None),
        ],
        Catalog::new(models),
        2,
    )
}

/// `node`'s status with model `m` (`m.gguf`, 50 bytes) loaded and ready.
fn m_ready(node: &str) -> NodeStatus {
    status(node, &[("m", "m.gguf", 50)], &[("m", ModelState::Ready)])
}

#[test]
fn down_after_n_failures_and_back_on_next_good_poll() {
    let mut f = fleet("");
    assert_eq!(
        f.apply_poll("a", 0, Ok(status("a", &[], &[]))),
        PollChange::CameUp
    );
    assert_eq!(
        f.apply_poll("a", 0, Err("refused".into())),
        PollChange::None
    );
    assert!(f.node("a").unwrap().up, "one failure is not enough");
    assert_eq!(
        f.apply_poll("a", 0, Err("refused".into())),
        PollChange::WentDown
    );
    assert!(!f.node("a").unwrap().up);
    assert_eq!(
        f.apply_poll("a", 0, Err("refused".into())),
        PollChange::None
    );
    assert_eq!(
        f.apply_poll("a", 0, Ok(status("a", &[], &[]))),
        PollChange::CameUp
    );
    assert_eq!(f.node("a").unwrap().failures, 0);
    assert_eq!(f.mark_down("a"), PollChange::WentDown);
}

#[test]
fn catalogue_merges_profiles_and_discovered_files() {
    let mut f = fleet("[[models]]\nid = \"small\"\nsource = \"S.gguf\"\naliases = [\"s\"]\n");
    f.apply_poll(
        "a",
        0,
        Ok(status(
            "a",
            &[("s-derived", "S.gguf", 50), ("other", "O.gguf", 70)],
            &[],
        )),
    );
    f.apply_poll(
        "b",
        0,
        Ok(status(
            "b",
            &[("other", "O.gguf", 70)],
            &[("manual", ModelState::Ready)],
        )),
    );
    let ids: Vec<String> = f.models().into_iter().map(|m| m.id).collect();
    assert_eq!(
        ids,
        vec!["small", "manual", "other"],
        "a covered file is not listed twice"
    );
    let t = f.table();
    assert_eq!(&*t.resolve("s").unwrap().id, "small");
    assert!(t.resolve("s-derived").is_none());
    assert!(t.resolve("other").unwrap().servable);
    assert_eq!(t.ready.get("manual").unwrap()[0].node.name, "b");
    let other = f.models().into_iter().find(|m| m.id == "other").unwrap();
    assert_eq!(other.loadable.len(), 2);
}

#[test]
fn down_nodes_and_poisoned_models_leave_routing() {
    let mut f = fleet("");
    f.apply_poll("a", 0, Ok(m_ready("a")));
    f.apply_poll("b", 0, Ok(m_ready("b")));
    assert_eq!(f.table().ready["m"].len(), 2);
    f.mark_poisoned("m", "a");
    let t = f.table();
    assert_eq!(t.ready["m"].len(), 1);
    assert_eq!(t.ready["m"][0].node.name, "b");
    let (w, _) = f.wanted("m", &[]).unwrap();
    assert_eq!(
        w.avoid,
        vec!["a"],
        "a poisoned node is a last resort for reloads"
    );
    f.mark_down("b");
    let t = f.table();
    assert!(!t.ready.contains_key("m"));
    assert!(t.resolve("m").unwrap().servable, "still loadable on a");
    f.mark_down("a");
    assert!(!f.table().resolve("m").is_some_and(|r| r.servable));
}

#[test]
fn affinity_limits_where_a_profile_loads() {
    let mut f = fleet("[[models]]\nid = \"p\"\nsource = \"P.gguf\"\nneurons = [\"b\"]\n");
    f.apply_poll("a", 0, Ok(status("a", &[("p", "P.gguf", 50)], &[])));
    assert!(f.wanted("p", &[]).unwrap().0.eligible.is_empty());
    f.apply_poll("b", 0, Ok(status("b", &[("p", "P.gguf", 50)], &[])));
    assert_eq!(f.wanted("p", &[]).unwrap().0.eligible, vec!["b"]);
}

#[test]
fn pins_override_profiles_and_rooms_carry_them() {
    let mut f = fleet("[[models]]\nid = \"p\"\nsource = \"P.gguf\"\npinned = true\n");
    assert!(f.is_pinned("p"));
    f.pins.insert("p".into(), false);
    assert!(!f.is_pinned("p"));
    f.pins.insert("q".into(), true);
    f.apply_poll("a", 0, Ok(status("a", &[], &[("q", ModelState::Ready)])));
    let rooms = f.rooms();
    let r = &rooms[0].devices[0].residents[0];
    assert!(r.pinned);
    assert_eq!(r.footprint, 110);
}

#[test]
fn a_polled_in_flight_count_is_stale_once_a_later_request_ended() {
    let mut f = fleet("");
    let busy = || {
        let mut s = m_ready("a");
        s.models[0].in_flight = 1;
        s
    };
    let in_flight = |f: &FleetState| f.rooms()[0].devices[0].residents[0].in_flight;
    let viewed = |f: &FleetState| f.view().models[0].placements[0].in_flight;
    // A poll sent at t=1000 saw one request in flight.
    f.apply_poll("a", 1_000, Ok(busy()));
    assert_eq!(in_flight(&f), 1);
    // It was ours: it ended at t=2000, after that poll was sent.
    let c = f.counters("m", "a");
    c.set(0, 2_000);
    assert_eq!(
        in_flight(&f),
        0,
        "the poll is older than what the gateway saw"
    );
    assert_eq!(viewed(&f), 0);
    // A later poll still sees one (a request that bypassed the gateway).
    f.apply_poll("a", 3_000, Ok(busy()));
    assert_eq!(in_flight(&f), 1);
    assert_eq!(viewed(&f), 1);
    // One in flight through the gateway, started after the poll, counts.
    c.set(1, 4_000);
    assert_eq!(in_flight(&f), 1);
}

#[test]
fn a_poll_sent_before_our_own_change_does_not_undo_it() {
    let mut f = fleet("");
    f.apply_poll("a", 1, Ok(m_ready("a")));
    let sent = cortex_core::now_unix_ms();
    f.record_unloaded("a", "m");
    // The poll left before the unload was recorded: it still shows m.
    f.apply_poll("a", sent.saturating_sub(1), Ok(m_ready("a")));
    assert!(
        !f.table().ready.contains_key("m"),
        "a stale poll must not bring m back"
    );
    // A later poll is the truth again.
    f.apply_poll("a", cortex_core::now_unix_ms() + 1, Ok(m_ready("a")));
    assert!(f.table().ready.contains_key("m"));
}

#[test]
fn file_facts_prefer_the_loaded_model_and_omit_what_no_one_said() {
    let mut f = fleet("");
    // `testing::status` reports loaded models with a 4096 window and files
    // without one.
    let mut st = status(
        "a",
        &[("m", "m.gguf", 50), ("cold", "cold.gguf", 70)],
        &[("m", ModelState::Ready)],
    );
    st.available[1].context_length = Some(1024);
    st.available[1].architecture = Some("gemma3".into());
    f.apply_poll("a", 0, Ok(st.clone()));
    let t = f.table();
    let m = &t.files["m"];
    assert_eq!(m.source.as_deref(), Some("m.gguf"));
    assert_eq!((m.size_bytes, m.context_length), (50, Some(4096)));
    let cold = &t.files["cold"];
    assert_eq!((cold.size_bytes, cold.context_length), (70, Some(1024)));
    assert_eq!(cold.architecture.as_deref(), Some("gemma3"));
    // Nothing said: nothing claimed.
    st.available[1].context_length = None;
    f.apply_poll("a", 1, Ok(st));
    assert_eq!(f.table().files["cold"].context_length, None);
}
