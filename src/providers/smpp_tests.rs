use super::*;

const MINUTE: Duration = Duration::from_secs(60);

fn provider(source: &str) -> SmppProvider {
    let settings = SmppSettings {
        source_addr: source.into(),
        ..SmppSettings::default()
    };
    SmppProvider::new("smsc", &settings, mpsc::unbounded_channel().0).unwrap()
}

#[test]
fn texts_outside_gsm7_go_as_ucs2_and_long_ones_in_message_payload() {
    let p = provider("+15005550006");
    let s = p.submit_sm("+79161234567", "Код 1234 😀", MINUTE).unwrap();
    assert_eq!(s.data_coding, DataCoding::Ucs2);
    let expected: Vec<u8> = "Код 1234 😀"
        .encode_utf16()
        .flat_map(u16::to_be_bytes)
        .collect();
    assert_eq!(s.short_message().as_ref(), expected.as_slice());
    assert_eq!(
        (s.source_addr_ton, s.source_addr.to_string()),
        (Ton::International, "15005550006".to_string())
    );
    let s = p.submit_sm("+14155550123", "€1", MINUTE).unwrap();
    assert_eq!(
        (s.data_coding, s.short_message().as_ref()),
        (DataCoding::McSpecific, &[0x1B, 0x65, b'1'][..])
    );
    let long = "ж".repeat(200);
    let s = p.submit_sm("+79161234567", &long, MINUTE).unwrap();
    assert!(s.short_message().as_ref().is_empty());
    assert_eq!(s.tlvs().len(), 1, "400 octets travel in message_payload");
    assert_eq!(
        provider("Acme")
            .submit_sm("+1", "x", MINUTE)
            .unwrap()
            .source_addr_ton,
        Ton::Alphanumeric
    );
}

#[test]
fn receipts_are_read_from_the_appendix_b_text() {
    let text = b"id:0123abc sub:001 dlvrd:001 submit date:2611231200 done date:2611231201 stat:DELIVRD err:000 text:none";
    assert_eq!(
        read_receipt(text),
        Some(Receipt {
            sid: "0123abc".into(),
            state: DeliveryState::Delivered,
            error: None
        })
    );
    let text = b"id:9 sub:001 dlvrd:000 submit date:2611231200 done date:2611231201 stat:UNDELIV err:034 text:";
    let r = read_receipt(text).unwrap();
    assert_eq!(
        (r.state, r.error.as_deref()),
        (DeliveryState::Undelivered, Some("034"))
    );
    let text =
        b"id:9 sub:001 dlvrd:000 submit date:2611231200 done date:2611231201 stat:EXPIRED err:000";
    assert_eq!(
        read_receipt(text).unwrap().error.as_deref(),
        Some("EXPIRED")
    );
    assert_eq!(read_receipt(b"id:9 stat:ENROUTE err:000"), None);
    assert_eq!(read_receipt(b"hello, a mobile-originated message"), None);
}

#[test]
fn the_validity_period_is_the_codes_remaining_life_in_relative_form() {
    assert_eq!(
        relative_validity(Duration::from_secs(300)),
        "000000000500000R"
    );
    assert_eq!(
        relative_validity(Duration::from_millis(59_900)),
        "000000000059000R"
    );
    assert_eq!(relative_validity(Duration::ZERO), "000000000001000R");
    assert_eq!(
        relative_validity(Duration::from_secs(2 * 86_400 + 3 * 3600 + 4 * 60 + 5)),
        "000002030405000R"
    );
    assert_eq!(
        relative_validity(Duration::from_secs(u64::MAX)),
        "000099235959000R"
    );
    let s = provider("+1")
        .submit_sm("+1", "x", Duration::from_secs(300))
        .unwrap();
    assert_eq!(s.validity_period.to_string(), "000000000500000R");
}
