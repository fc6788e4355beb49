use super::*;
use std::str::FromStr;

fn secret() -> SpaceSecret {
    SpaceSecret::from_bytes([1; 32])
}

fn feed(n: u8) -> FeedKey {
    FeedKey::from(&SigningKey::from_bytes(&[n; 32]))
}

#[test]
fn known_answers_pin_every_derivation() {
    let s = secret();
    let a = s.address();
    assert_eq!(
        a.to_hex(),
        "207c457da51f4b5c910b874e69f9e9a520287cb6ecf14e84226cbe1d2bed64dc"
    );
    assert_eq!(
        hex::encode(*s.content_key()),
        "17c0a1e7b6cf0668522806f12c5ef4d60095477a4b2338996a09402f78350952"
    );
    assert_eq!(
        a.discovery_key().to_hex(),
        "ce071b8cb0557291516a67db25027ea15ffb62b34e96bd91971102a668c3ac57"
    );
    assert_eq!(
        hex::encode(Capability::new(&a, b"connection secret", Role::Dialer).0),
        "1ca90d41c6679cdc552a9b70ef0684208b2d1db1140832940847a5a81e4b5041"
    );
    assert_eq!(
        SeedCode::new(a).to_string(),
        "seed-04g7r-hbxmm-fmpq4-h1e3m-wtfsx-6jj0a-3wpvp-f2km4-49pbw-79bxn-jdssg-3pky0"
    );
    assert_eq!(
        InviteCode::new(&s).to_string(),
        "invite-040g2-08104-0g208-1040g-20810-40g20-81040-g2081-040g2-08104-0g20e-8y2gg"
    );
    assert_eq!(
        hex::encode(MembershipCert::signing_bytes(&a, &feed(2))),
        "736565646572206d656d6265727368697020763100207c457da51f4b5c910b874e69f9e9a520287cb6ecf14e84226cbe1d2bed64dc8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394"
    );
    let cipher = ContentCipher::new(&s);
    assert_eq!(
        hex::encode(cipher.seal(&feed(2), 7, b"hello", &[3; 24]).unwrap()),
        "030303030303030303030303030303030303030303030303f7b90ccd1c6946ef5676f51d15403b00cec3704a0f"
    );
}

#[test]
fn codes_round_trip_and_forgive_case_dashes_and_lookalikes() {
    let s = secret();
    let seed = SeedCode::new(s.address());
    let text = seed.to_string();
    assert!(text.starts_with("seed-"));
    assert_eq!(SeedCode::from_str(&text).unwrap(), seed);
    assert_eq!(SeedCode::from_str(&text.to_uppercase()).unwrap(), seed);
    assert_eq!(SeedCode::from_str(&format!("  {text}\n")).unwrap(), seed);
    let squashed = format!("seed{}", text["seed".len()..].replace('-', ""));
    assert_eq!(SeedCode::from_str(&squashed).unwrap(), seed);
    let spaced = text.replace('-', " ");
    assert_eq!(SeedCode::from_str(&spaced).unwrap(), seed);
    let lookalike = text.replacen('0', "O", 1).replacen('1', "l", 1);
    assert_eq!(SeedCode::from_str(&lookalike).unwrap(), seed);
    let invite = InviteCode::new(&s);
    assert_eq!(InviteCode::from_str(&invite.to_string()).unwrap(), invite);
    assert_eq!(invite.address(), s.address());
}

#[test]
fn every_single_character_substitution_is_caught_as_a_typo() {
    let text = SeedCode::new(secret().address()).to_string();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate().skip("seed-".len()) {
        if c == '-' {
            continue;
        }
        for &a in ALPHABET_FOR_TESTS {
            let a = a as char;
            if value_eq(a, c) {
                continue;
            }
            let mut t = chars.clone();
            t[i] = a;
            let t: String = t.into_iter().collect();
            match SeedCode::from_str(&t) {
                Err(CodeError::Typo { .. }) => {}
                other => panic!("{t}: expected a typo, got {other:?}"),
            }
        }
    }
}

#[test]
fn a_changed_or_swapped_character_names_the_group_it_is_in() {
    let text = SeedCode::new(secret().address()).to_string();
    let groups: Vec<&str> = text.split('-').collect();
    // Change the last character of group 3, then swap two neighbours inside group 7.
    let mut changed: Vec<char> = text.chars().collect();
    let at = "seed-".len() + 2 * 6 + 4;
    changed[at] = if changed[at] == 'x' { 'y' } else { 'x' };
    let changed: String = changed.into_iter().collect();
    match SeedCode::from_str(&format!("  {changed}")) {
        Err(CodeError::Typo {
            suspect: Some(s), ..
        }) => {
            assert_eq!(s.group, 3);
            assert_eq!(
                s.span,
                2 + 5 + 2 * 6..2 + 5 + 2 * 6 + 5,
                "into the text as given"
            );
            assert_eq!(&changed[s.span.start - 2..s.span.end - 2], &changed[17..22]);
        }
        other => panic!("{changed}: expected a typo in group 3, got {other:?}"),
    }
    let g7 = groups[7];
    let swapped_group: String = [g7.as_bytes()[1], g7.as_bytes()[0]]
        .iter()
        .map(|&b| b as char)
        .chain(g7.chars().skip(2))
        .collect();
    if swapped_group != g7 {
        let swapped = text.replacen(g7, &swapped_group, 1);
        let err = SeedCode::from_str(&swapped).unwrap_err();
        assert!(
            matches!(&err, CodeError::Typo { suspect: Some(s), .. } if s.group == 7),
            "{err:?}"
        );
        assert!(err.to_string().contains("group 7"), "{err}");
    }
    // Without dashes the span still covers the group's five characters.
    let bare = changed.replace('-', "").replacen("seed", "seed-", 1);
    match SeedCode::from_str(&bare) {
        Err(CodeError::Typo {
            suspect: Some(s), ..
        }) => assert_eq!(&bare[s.span], &changed[17..22]),
        other => panic!("{bare}: {other:?}"),
    }
}

#[test]
fn typos_in_two_groups_name_no_group() {
    let text = SeedCode::new(secret().address()).to_string();
    let mut t: Vec<char> = text.chars().collect();
    for at in ["seed-".len(), "seed-".len() + 6 * 6] {
        t[at] = if t[at] == 'x' { 'y' } else { 'x' };
    }
    let t: String = t.into_iter().collect();
    let err = SeedCode::from_str(&t).unwrap_err();
    assert_eq!(
        err,
        CodeError::Typo {
            kind: "a seed code",
            suspect: None
        }
    );
    assert!(err.to_string().ends_with("check it character by character"));
}

const ALPHABET_FOR_TESTS: &[u8] = b"0123456789abcdefghjkmnpqrstvwxyz";

fn value_eq(a: char, b: char) -> bool {
    a.eq_ignore_ascii_case(&b)
}

#[test]
fn wrong_kind_length_and_characters_get_their_own_messages() {
    let s = secret();
    let invite = InviteCode::new(&s).to_string();
    let err = SeedCode::from_str(&invite).unwrap_err();
    assert_eq!(err.to_string(), "this is an invite code, not a seed code");
    let seed = SeedCode::new(s.address()).to_string();
    assert!(matches!(
        InviteCode::from_str(&seed),
        Err(CodeError::WrongKind { .. })
    ));
    assert!(matches!(
        SeedCode::from_str("hello"),
        Err(CodeError::NoPrefix { .. })
    ));
    assert!(matches!(
        SeedCode::from_str(&seed[..seed.len() - 3]),
        Err(CodeError::WrongLength { .. })
    ));
    let bad = format!("{}u{}", &seed[..8], &seed[9..]);
    assert!(matches!(
        SeedCode::from_str(&bad),
        Err(CodeError::BadChar { ch: 'u', .. })
    ));
    // The body of an invite under a seed prefix fails its checksum (the kind is checksummed).
    let swapped = format!("seed{}", &invite["invite".len()..]);
    assert!(matches!(
        SeedCode::from_str(&swapped),
        Err(CodeError::Typo { .. })
    ));
    assert!(err.to_string().chars().next().unwrap().is_lowercase());
}

#[test]
fn sealed_entries_only_open_at_their_own_place() {
    let s = secret();
    let c = ContentCipher::new(&s);
    let sealed = c
        .seal(&feed(1), 5, b"secret path and content", &[9; 24])
        .unwrap();
    assert_eq!(sealed.len(), 23 + SEAL_OVERHEAD);
    assert_eq!(
        c.open(&feed(1), 5, &sealed).unwrap(),
        b"secret path and content"
    );
    assert!(matches!(
        c.open(&feed(1), 6, &sealed),
        Err(SpaceError::Decrypt { seq: 6, .. })
    ));
    assert!(c.open(&feed(2), 5, &sealed).is_err());
    let other = ContentCipher::new(&SpaceSecret::from_bytes([2; 32]));
    assert!(other.open(&feed(1), 5, &sealed).is_err());
    for bit in 0..sealed.len() * 8 {
        let mut t = sealed.clone();
        t[bit / 8] ^= 1 << (bit % 8);
        assert!(c.open(&feed(1), 5, &t).is_err(), "bit {bit}");
    }
    assert_eq!(
        c.open(&feed(1), 5, &sealed[..10]),
        Err(SpaceError::TooShort { len: 10 })
    );
    assert!(!sealed.windows(6).any(|w| w == b"secret"));
}

#[test]
fn certificates_admit_only_their_feed_in_their_space() {
    let s = secret();
    let cert = MembershipCert::issue(&s, feed(3));
    let ok = cert.clone().verify(&s.address()).unwrap();
    assert_eq!(ok.feed(), feed(3));
    let other = SpaceSecret::from_bytes([5; 32]).address();
    assert!(matches!(
        cert.clone().verify(&other),
        Err(SpaceError::OtherSpace { .. })
    ));
    let mut moved = cert.clone();
    moved.feed = feed(4);
    assert!(matches!(
        moved.verify(&s.address()),
        Err(SpaceError::BadCertificate { .. })
    ));
    for bit in 0..512 {
        let mut t = cert.clone();
        t.signature[bit / 8] ^= 1 << (bit % 8);
        assert!(t.verify(&s.address()).is_err(), "bit {bit}");
    }
    // A certificate from another space's key, relabelled with our address, fails.
    let mut forged = MembershipCert::issue(&SpaceSecret::from_bytes([5; 32]), feed(3));
    forged.address = s.address();
    assert!(forged.verify(&s.address()).is_err());
    let bytes = postcard::to_allocvec(&cert).unwrap();
    let back: MembershipCert = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, cert);
}

#[test]
fn capabilities_bind_address_connection_and_role() {
    let a = secret().address();
    let cap = Capability::new(&a, b"conn one", Role::Dialer);
    assert!(cap.verify(&a, b"conn one", Role::Dialer));
    assert!(!cap.verify(&a, b"conn two", Role::Dialer));
    assert!(!cap.verify(&a, b"conn one", Role::Listener));
    let b = SpaceSecret::from_bytes([6; 32]).address();
    assert!(!cap.verify(&b, b"conn one", Role::Dialer));
    let mut t = cap;
    t.0[0] ^= 1;
    assert!(!t.verify(&a, b"conn one", Role::Dialer));
}

#[test]
fn discovery_key_reveals_neither_address_nor_secret() {
    let s = secret();
    let d = s.address().discovery_key();
    assert_ne!(d.0, s.address().0);
    assert_ne!(&d.0, s.as_bytes());
    assert_eq!(format!("{s:?}"), "SpaceSecret(…)");
    assert_eq!(format!("{:?}", InviteCode::new(&s)), "InviteCode(…)");
}
