use super::*;

fn providers() -> Providers {
    let s = crate::config::load_from_str(
        "[channels]\nsms = \"a, b\"\n[providers.a]\nkind = \"log\"\n[providers.b]\nkind = \"log\"\n\
         [delivery]\nbreaker_failures = 1\nbreaker_open_ms = 60000\n",
    )
    .unwrap();
    let metrics = Arc::new(Metrics::new());
    Providers::from_settings(&s, metrics, mpsc::unbounded_channel().0).unwrap()
}

fn fail(p: &Providers, index: usize) {
    let result = Err(ProviderError::Transient {
        status: Some(503),
        detail: "down".into(),
        in_doubt: false,
    });
    p.learn(&p.slots[index], &result);
}

#[tokio::test]
async fn a_call_that_waited_while_its_breaker_opened_is_not_made() {
    let p = providers();
    let route = p.route(
        Channel::Sms,
        &Destination::Phone(crate::domain::PhoneNumber::parse("+14155550123").unwrap()),
    );
    let Pick::Use { index: a, probe } = p.pick(route, None) else {
        panic!("a is closed")
    };
    assert_eq!((p.name(a), probe), ("a", false));
    // While this call waited for a slot, another call's failure opened a's breaker.
    fail(&p, a);
    assert!(p.has_alternative(route, a));
    assert!(p.reserve(a, true).await.is_none(), "picks again instead");
    let Pick::Use { index: b, .. } = p.pick(route, None) else {
        panic!("b is closed")
    };
    assert_eq!(p.name(b), "b");
    assert!(p.reserve(b, true).await.is_some());
    // A half-open probe, or a call with nowhere else to go, goes through.
    assert!(p.reserve(a, false).await.is_some());
}
