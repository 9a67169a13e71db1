use super::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn catalog() -> Catalog {
    let mut web = Service::for_test("web", addr(80), None, [addr(1), addr(2), addr(3)]);
    web.instances[2].state = BackendState::Draining;
    Catalog {
        services: vec![web],
    }
}

fn web() -> ServiceRef {
    ServiceRef::Name("web".into())
}

fn set(port: u16, state: Option<AdminState>, weight: Option<u16>) -> Edit {
    Edit::Set {
        service: web(),
        backend: addr(port),
        value: BackendOverride { state, weight },
    }
}

fn states(catalog: &Catalog) -> Vec<(u16, u16, BackendState)> {
    catalog.services[0]
        .instances
        .iter()
        .map(|i| (i.address.port(), i.weight, i.state))
        .collect()
}

use BackendState::{Active, Draining};

#[test]
fn states_and_weights_apply_after_the_merge() {
    let merged = catalog();
    let mut o = Overrides::default();
    assert!(
        o.edit(&set(1, Some(AdminState::Drain), Some(7)), &merged)
            .unwrap()
    );
    assert!(
        o.edit(&set(2, Some(AdminState::Maint), None), &merged)
            .unwrap()
    );
    assert!(
        o.edit(&set(3, Some(AdminState::Ready), None), &merged)
            .unwrap()
    );
    assert_eq!(
        states(&o.apply(&merged)),
        vec![(1, 7, Draining), (3, 500, Active)],
        "drain keeps the backend, maint takes it out, ready overrules the source"
    );
    assert!(
        !o.edit(&set(3, Some(AdminState::Ready), None), &merged)
            .unwrap(),
        "the same override again changes nothing"
    );
    // A PUT replaces: the weight alone now, the state follows the source again.
    o.edit(&set(1, None, Some(9)), &merged).unwrap();
    assert_eq!(states(&o.apply(&merged))[0], (1, 9, Active));
}

#[test]
fn overrides_survive_new_catalogs_and_wait_for_their_backend() {
    let merged = catalog();
    let mut o = Overrides::default();
    o.edit(&set(2, Some(AdminState::Drain), None), &merged)
        .unwrap();
    let mut without = merged.clone();
    without.services[0].instances.remove(1);
    assert_eq!(states(&o.apply(&without)).len(), 2);
    assert_eq!(
        o.dormant(&without),
        vec![Dormant {
            listen: Some(addr(80)),
            service: Some("web".into()),
            backend: Some(addr(2))
        }]
    );
    assert_eq!(
        states(&o.apply(&merged))[1],
        (2, 500, Draining),
        "back in the catalog, still drained"
    );
    assert!(o.dormant(&merged).is_empty());
}

#[test]
fn a_switch_drains_everything_else_and_a_backend_override_wins() {
    let merged = catalog();
    let mut o = Overrides::default();
    let switch = Edit::Switch {
        service: web(),
        backends: [addr(2)].into(),
    };
    assert!(o.edit(&switch, &merged).unwrap());
    assert_eq!(
        states(&o.apply(&merged)),
        vec![(1, 500, Draining), (2, 500, Active), (3, 500, Draining)]
    );
    // New instances outside the set drain as they appear.
    let mut grown = merged.clone();
    let mut extra = grown.services[0].instances[0].clone();
    extra.address = addr(4);
    grown.services[0].instances.push(extra);
    assert_eq!(states(&o.apply(&grown))[3], (4, 500, Draining));
    o.edit(&set(1, Some(AdminState::Ready), None), &merged)
        .unwrap();
    assert_eq!(states(&o.apply(&merged))[0], (1, 500, Active));
    assert!(!o.edit(&switch, &merged).unwrap(), "same set, no change");
    o.edit(&Edit::ClearSwitch { service: web() }, &merged)
        .unwrap();
    assert_eq!(states(&o.apply(&merged))[1], (2, 500, Active));
    assert_eq!(states(&o.apply(&merged))[2], (3, 500, Draining));
}

#[test]
fn bad_edits_name_their_field() {
    let merged = catalog();
    let mut o = Overrides::default();
    let cases = [
        (
            Edit::Set {
                service: ServiceRef::Name("nope".into()),
                backend: addr(1),
                value: BackendOverride {
                    state: Some(AdminState::Drain),
                    weight: None,
                },
            },
            "service",
            true,
        ),
        (set(9, Some(AdminState::Drain), None), "backend", true),
        (set(1, None, None), "state", false),
        (set(1, None, Some(1001)), "weight", false),
        (
            Edit::Clear {
                service: web(),
                backend: addr(1),
            },
            "backend",
            true,
        ),
        (
            Edit::Switch {
                service: web(),
                backends: [addr(1), addr(9)].into(),
            },
            "backends[1]",
            false,
        ),
        (
            Edit::Switch {
                service: web(),
                backends: BTreeSet::new(),
            },
            "backends",
            false,
        ),
        (Edit::ClearSwitch { service: web() }, "service", true),
    ];
    for (edit, field, not_found) in cases {
        let err = o.edit(&edit, &merged).unwrap_err();
        assert_eq!(err.field(), field, "{edit:?}: {err}");
        assert!(err.to_string().starts_with(field), "{err}");
        assert_eq!(err.is_not_found(), not_found, "{err}");
    }
    assert!(o.is_empty(), "refused edits leave nothing behind");
}

#[test]
fn weights_are_checked_like_the_snapshot() {
    assert_eq!(check_weight(1), Ok(1));
    assert_eq!(check_weight(1000), Ok(1000));
    for bad in [0, 1001, -1, 70_000] {
        let err = check_weight(bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("weight: {bad} is outside 1..=1000")
        );
    }
}

#[test]
fn clearing_the_last_override_forgets_the_service() {
    let merged = catalog();
    let mut o = Overrides::default();
    o.edit(&set(1, Some(AdminState::Drain), None), &merged)
        .unwrap();
    let json = serde_json::to_value(&o).unwrap();
    assert_eq!(
        json["backends"]["127.0.0.1:80"]["127.0.0.1:1"]["state"],
        "drain"
    );
    let back: Overrides = serde_json::from_value(json).unwrap();
    assert_eq!(back, o);
    o.edit(
        &Edit::Clear {
            service: web(),
            backend: addr(1),
        },
        &merged,
    )
    .unwrap();
    assert!(o.is_empty());
}

#[test]
fn an_override_stays_with_its_listen_address_when_another_service_takes_the_name() {
    let merged = catalog();
    let mut o = Overrides::default();
    o.edit(&set(1, Some(AdminState::Drain), None), &merged)
        .unwrap();
    o.edit(
        &Edit::Switch {
            service: web(),
            backends: [addr(2)].into(),
        },
        &merged,
    )
    .unwrap();
    // "web" on :80 is gone; another service, on :81, is now called "web" and has the same backends.
    let mut taken = merged.clone();
    taken.services[0].listen = addr(81);
    assert_eq!(
        states(&o.apply(&taken)),
        states(&merged),
        "neither the override nor the switch follows the name"
    );
    assert_eq!(o.dormant(&taken).len(), 2);
    // By listen address, the override is still there to clear.
    o.edit(
        &Edit::Clear {
            service: ServiceRef::Listen(addr(80)),
            backend: addr(1),
        },
        &taken,
    )
    .unwrap();
    assert!(o.backends.is_empty());
}

#[test]
fn name_keyed_overrides_of_an_older_state_file_move_to_their_service_once() {
    let old = serde_json::json!({
        "backends": {"web": {"127.0.0.1:1": {"state": "drain"}}},
        "switches": {"web": ["127.0.0.1:2"]}
    });
    let by_name: LegacyOverrides = serde_json::from_value(old).unwrap();
    let mut o = Overrides {
        by_name,
        ..Overrides::default()
    };
    let nothing = Catalog::default();
    assert!(
        o.adopt_legacy(&nothing).is_empty(),
        "no service of that name yet"
    );
    assert_eq!(o.dormant(&nothing).len(), 2);
    let merged = catalog();
    assert_eq!(o.adopt_legacy(&merged), vec![("web".to_string(), addr(80))]);
    assert!(o.by_name.is_empty());
    assert_eq!(
        states(&o.apply(&merged)),
        vec![(1, 500, Draining), (2, 500, Active), (3, 500, Draining)]
    );
    // From now on it is keyed by the listen address like any other.
    let mut taken = merged.clone();
    taken.services[0].listen = addr(81);
    assert!(o.adopt_legacy(&taken).is_empty());
    assert_eq!(states(&o.apply(&taken)), states(&merged));
}
