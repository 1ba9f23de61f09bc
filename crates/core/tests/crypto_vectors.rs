//! Byte-compatibility tests for the crypto formats against the shared vectors
//! (`shared/vectors/compat-v1.json`: `hkdf`, `rsa`, `grants`, `enc1`, `enc1Bad`), plus
//! PKCS#1 import, mint/unwrap round trips and a secret-leak check on every error/Debug text.

use std::path::PathBuf;

use chrono::{DateTime, Duration, TimeZone, Utc};
use mana_ai_core::crypto::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// vector loading

fn vectors_path() -> PathBuf {
    const REL: &str = "shared/vectors/compat-v1.json";
    if let Some(dir) = std::env::var_os("MANA_AI_SHARED_DIR") {
        let dir = PathBuf::from(dir);
        for candidate in [
            dir.join("vectors/compat-v1.json"),
            dir.join("compat-v1.json"),
            dir.join(REL),
            dir.clone(),
        ] {
            if candidate.is_file() {
                return candidate;
            }
        }
        panic!(
            "MANA_AI_SHARED_DIR={} does not contain vectors/compat-v1.json",
            dir.display()
        );
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for dir in manifest.ancestors() {
        let candidate = dir.join(REL);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "compat vectors not found: set MANA_AI_SHARED_DIR or place {REL} in an ancestor of {}",
        manifest.display()
    );
}

fn vectors() -> Value {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON in {}: {e}", path.display()))
}

fn section(name: &str) -> Vec<Value> {
    let v = vectors();
    let list = v[name]
        .as_array()
        .unwrap_or_else(|| panic!("vector section {name:?} missing or not an array"))
        .clone();
    assert!(!list.is_empty(), "vector section {name:?} is empty");
    list
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn key32(hex_str: &str) -> [u8; 32] {
    unhex(hex_str).try_into().expect("32-byte key")
}

fn derivation_of(v: &Value) -> GrantDerivation {
    serde_json::from_value(v.clone()).expect("derivation shape")
}

fn private_key() -> GrantPrivateKey {
    let pem = vectors()["rsa"]["privateKeyPem"]
        .as_str()
        .expect("rsa.privateKeyPem")
        .to_string();
    GrantPrivateKey::from_pem(&pem).expect("vector private key imports")
}

fn public_key() -> GrantPublicKey {
    let pem = vectors()["rsa"]["publicKeyPem"]
        .as_str()
        .expect("rsa.publicKeyPem")
        .to_string();
    GrantPublicKey::from_pem(&pem).expect("vector public key imports")
}

fn now_2026() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 15, 12, 0, 0).unwrap()
}

// ---------------------------------------------------------------------------------------
// hkdf

#[test]
fn hkdf_vectors() {
    for (i, v) in section("hkdf").iter().enumerate() {
        let d = derivation_of(&v["derivation"]);
        assert_eq!(
            canonical_info_string(&d),
            v["info"].as_str().unwrap(),
            "hkdf[{i}] info"
        );
        let master = unhex(v["masterKeyHex"].as_str().unwrap());
        let mdk = derive_mission_data_key(&master, &d).expect("derive");
        assert_eq!(
            hex(mdk.expose()),
            v["mdkHex"].as_str().unwrap(),
            "hkdf[{i}] mdk"
        );
    }
}

#[test]
fn spec_golden_vector() {
    let master: Vec<u8> = (1u8..=32).collect();
    let d = GrantDerivation {
        version: "v1".into(),
        mission_id: "mission-abc".into(),
        tables: vec!["notes".into(), "tasks".into()],
        record_ids: vec!["notes:n1".into(), "tasks:t1".into()],
    };
    assert_eq!(
        canonical_info_string(&d),
        "mana-ai-mission-grant:v1:tables=notes,tasks:ids=notes:n1,tasks:t1"
    );
    assert_eq!(
        hex(derive_mission_data_key(&master, &d).unwrap().expose()),
        "7538df66c51d3ddb667c0135feb4ac7c2800ba372babc7e61e9423d6a9a65628"
    );
}

// ---------------------------------------------------------------------------------------
// grants

#[test]
fn grant_vectors() {
    let key = private_key();
    let grants = section("grants");
    let mut seen_ok = false;
    for g in &grants {
        let name = g["name"].as_str().unwrap();
        let grant = &g["grant"];
        let mission_id = grant["derivation"]["missionId"].as_str().unwrap();
        let got = unwrap_grant(Some(&key), grant, mission_id, now_2026());
        let expect = &g["expect"];
        if expect["ok"] == json!(true) {
            seen_ok = true;
            let mdk = got.unwrap_or_else(|e| panic!("{name}: expected ok, got {e}"));
            assert_eq!(
                hex(mdk.expose()),
                expect["mdkHex"].as_str().unwrap(),
                "{name}"
            );
        } else {
            let reason = expect["reason"].as_str().unwrap();
            match got {
                Ok(_) => panic!("{name}: expected {reason}, got a key"),
                Err(e) => assert_eq!(e.as_str(), reason, "{name}"),
            }
        }
        // Without a key every grant is `not-configured`, whatever it contains.
        assert_eq!(
            unwrap_grant(None, grant, mission_id, now_2026()).unwrap_err(),
            UnwrapFailure::NotConfigured,
            "{name}"
        );
    }
    assert!(seen_ok, "no successful grant vector");
}

fn valid_grant() -> Value {
    section("grants")
        .into_iter()
        .find(|g| g["expect"]["ok"] == json!(true))
        .expect("a valid grant vector")["grant"]
        .clone()
}

#[test]
fn valid_vector_grant_matches_hkdf_of_its_derivation() {
    // The wrapped key in the "valid" vector is the MDK the hkdf vector derives.
    let g = valid_grant();
    let mdk = unwrap_grant(Some(&private_key()), &g, "mission-1", now_2026()).unwrap();
    let hk = section("hkdf")
        .into_iter()
        .find(|h| h["derivation"] == g["derivation"])
        .expect("matching hkdf vector");
    let expected = derive_mission_data_key(
        &unhex(hk["masterKeyHex"].as_str().unwrap()),
        &derivation_of(&hk["derivation"]),
    )
    .unwrap();
    assert_eq!(mdk, expected);
}

#[test]
fn mission_mismatch_is_checked_after_expiry() {
    let key = private_key();
    let g = valid_grant();
    assert_eq!(
        unwrap_grant(Some(&key), &g, "mission-2", now_2026()).unwrap_err(),
        UnwrapFailure::MissionMismatch
    );
    // expired wins over mismatch
    let late = Utc.with_ymd_and_hms(2100, 1, 1, 0, 0, 0).unwrap();
    assert_eq!(
        unwrap_grant(Some(&key), &g, "mission-2", late).unwrap_err(),
        UnwrapFailure::Expired
    );
    // mismatch wins over a broken wrapped key
    let mut broken = g.clone();
    broken["wrappedKey"] = json!("!!!");
    assert_eq!(
        unwrap_grant(Some(&key), &broken, "mission-2", now_2026()).unwrap_err(),
        UnwrapFailure::MissionMismatch
    );
    assert_eq!(
        unwrap_grant(Some(&key), &broken, "mission-1", now_2026()).unwrap_err(),
        UnwrapFailure::Malformed
    );
}

#[test]
fn expiry_boundary_is_inclusive() {
    let key = private_key();
    let mut g = valid_grant();
    g["expiresAt"] = json!("2026-06-15T12:00:00.000Z");
    let at = now_2026();
    assert!(unwrap_grant(Some(&key), &g, "mission-1", at).is_ok());
    assert_eq!(
        unwrap_grant(Some(&key), &g, "mission-1", at + Duration::milliseconds(1)).unwrap_err(),
        UnwrapFailure::Expired
    );
    // an offset form of the same instant is still parsed
    g["expiresAt"] = json!("2026-06-15T14:00:00.000+02:00");
    assert!(unwrap_grant(Some(&key), &g, "mission-1", at).is_ok());
}

#[test]
fn shapeless_grants_are_malformed() {
    let key = private_key();
    let g = valid_grant();
    let mut cases = vec![json!(null), json!("grant"), json!(42), json!({}), json!([])];
    for field in ["wrappedKey", "derivation", "issuedAt", "expiresAt"] {
        let mut c = g.clone();
        c.as_object_mut().unwrap().remove(field);
        cases.push(c);
    }
    let mut c = g.clone();
    c["derivation"]["recordIds"] = json!("notes:n1");
    cases.push(c);
    let mut c = g.clone();
    c["wrappedKey"] = json!(123);
    cases.push(c);
    for c in &cases {
        assert_eq!(
            unwrap_grant(Some(&key), c, "mission-1", now_2026()).unwrap_err(),
            UnwrapFailure::Malformed,
            "{c}"
        );
    }
}

#[test]
fn wrapped_key_uses_forgiving_base64() {
    let key = private_key();
    let mut g = valid_grant();
    let wk = g["wrappedKey"].as_str().unwrap().to_string();
    let sloppy: String = wk
        .trim_end_matches('=')
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    g["wrappedKey"] = json!(sloppy);
    assert!(unwrap_grant(Some(&key), &g, "mission-1", now_2026()).is_ok());
}

#[test]
fn tampered_wrapped_key_is_rejected() {
    let key = private_key();
    let mut g = valid_grant();
    let mut raw = decode_forgiving(g["wrappedKey"].as_str().unwrap()).unwrap();
    raw[100] ^= 0x80;
    g["wrappedKey"] = json!(encode_standard(&raw));
    assert_eq!(
        unwrap_grant(Some(&key), &g, "mission-1", now_2026()).unwrap_err(),
        UnwrapFailure::WrapRejected
    );
    // truncated ciphertext: also an RSA failure
    g["wrappedKey"] = json!(encode_standard(&raw[..128]));
    assert_eq!(
        unwrap_grant(Some(&key), &g, "mission-1", now_2026()).unwrap_err(),
        UnwrapFailure::WrapRejected
    );
}

#[test]
fn grant_for_another_key_is_rejected() {
    let (other_private, other_public) = generate_keypair().unwrap();
    let other_public = GrantPublicKey::from_pem(&other_public).unwrap();
    let grant = mint_grant(
        &[5u8; 32],
        &other_public,
        "mission-1",
        &["notes".into()],
        &["notes:n1".into()],
        None,
        now_2026(),
    )
    .unwrap();
    assert_eq!(
        unwrap_grant(Some(&private_key()), &grant, "mission-1", now_2026()).unwrap_err(),
        UnwrapFailure::WrapRejected
    );
    let other = GrantPrivateKey::from_pem(&other_private).unwrap();
    assert!(unwrap_grant(Some(&other), &grant, "mission-1", now_2026()).is_ok());
}

// ---------------------------------------------------------------------------------------
// PKCS#1

/// Reads one DER TLV at `pos`; returns (tag, content range end, content start).
fn der_tlv(der: &[u8], pos: usize) -> (u8, usize, usize) {
    let tag = der[pos];
    let first = der[pos + 1] as usize;
    let (len, start) = if first < 0x80 {
        (first, pos + 2)
    } else {
        let n = first & 0x7f;
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | der[pos + 2 + i] as usize;
        }
        (len, pos + 2 + n)
    };
    (tag, start + len, start)
}

/// PKCS#8 PrivateKeyInfo ⇒ the embedded PKCS#1 RSAPrivateKey DER.
fn pkcs8_to_pkcs1(pkcs8: &[u8]) -> Vec<u8> {
    let (tag, end, mut pos) = der_tlv(pkcs8, 0);
    assert_eq!((tag, end), (0x30, pkcs8.len()), "outer SEQUENCE");
    let (tag, next, _) = der_tlv(pkcs8, pos);
    assert_eq!(tag, 0x02, "version INTEGER");
    pos = next;
    let (tag, next, _) = der_tlv(pkcs8, pos);
    assert_eq!(tag, 0x30, "AlgorithmIdentifier");
    pos = next;
    let (tag, end, start) = der_tlv(pkcs8, pos);
    assert_eq!(tag, 0x04, "privateKey OCTET STRING");
    pkcs8[start..end].to_vec()
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = encode_standard(der);
    let body: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        body.join("\n")
    )
}

#[test]
fn pkcs1_private_key_is_accepted() {
    let pkcs8_pem = vectors()["rsa"]["privateKeyPem"]
        .as_str()
        .unwrap()
        .to_string();
    let pkcs8 = pem_to_der(&pkcs8_pem).unwrap();
    let pkcs1 = pkcs8_to_pkcs1(&pkcs8);
    assert_ne!(pkcs1.as_slice(), pkcs8.as_slice());
    // RSAPrivateKey starts with SEQUENCE { INTEGER 0 (version), INTEGER n ...
    assert_eq!(&pkcs1[4..7], &[0x02, 0x01, 0x00]);
    let rsa_pem = pem("RSA PRIVATE KEY", &pkcs1);
    assert!(GrantPrivateKey::from_pem(&pkcs8_pem).is_ok());
    let key = GrantPrivateKey::from_pem(&rsa_pem).expect("PKCS#1 PEM imports");
    assert_eq!(key.bits(), 2048);
    let mdk = unwrap_grant(Some(&key), &valid_grant(), "mission-1", now_2026()).unwrap();
    assert_eq!(
        hex(mdk.expose()),
        "db9959733f5e25b1031cf0d1163f2ad9836f81a8f2e582688fa0a0b61d3b4ed8"
    );
    // The public half derived from the PKCS#1 key equals the vector's SPKI key.
    assert_eq!(
        key.public_key().to_pem().unwrap(),
        public_key().to_pem().unwrap()
    );
}

#[test]
fn truncated_private_key_pem_is_rejected() {
    let pkcs8_pem = vectors()["rsa"]["privateKeyPem"]
        .as_str()
        .unwrap()
        .to_string();
    let der = pem_to_der(&pkcs8_pem).unwrap();
    let cut = pem("PRIVATE KEY", &der[..der.len() - 10]);
    assert!(matches!(
        GrantPrivateKey::from_pem(&cut),
        Err(KeyError::Rejected(_))
    ));
    assert_eq!(GrantPrivateKey::from_pem("").unwrap_err(), KeyError::Empty);
    // a public key is not a private key
    let spki = vectors()["rsa"]["publicKeyPem"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(GrantPrivateKey::from_pem(&spki).is_err());
}

// ---------------------------------------------------------------------------------------
// mint

#[test]
fn mint_then_unwrap_round_trip() {
    let master = unhex("00070e151c232a31383f464d545b626970777e858c939aa1a8afb6bdc4cbd2d9");
    let now = Utc.with_ymd_and_hms(2026, 3, 1, 8, 30, 0).unwrap() + Duration::microseconds(1500);
    let tables = vec!["tasks".to_string(), "notes".to_string()];
    let ids = vec!["tasks:t1".to_string(), "notes:n1".to_string()];
    let mint = || {
        mint_grant(
            &master,
            &public_key(),
            "mission-1",
            &tables,
            &ids,
            None,
            now,
        )
        .unwrap()
    };
    let grant = mint();

    let keys: Vec<&str> = grant
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(keys, ["wrappedKey", "derivation", "issuedAt", "expiresAt"]);
    assert_eq!(
        grant["derivation"],
        json!({"version": "v1", "missionId": "mission-1",
               "tables": ["notes", "tasks"], "recordIds": ["notes:n1", "tasks:t1"]})
    );
    assert_eq!(grant["issuedAt"], json!("2026-03-01T08:30:00.001Z"));
    assert_eq!(grant["expiresAt"], json!("2026-03-08T08:30:00.001Z"));
    let wk = grant["wrappedKey"].as_str().unwrap();
    assert_eq!(wk.len(), 344, "256 bytes in padded base64");
    assert!(wk.ends_with('='));

    let mdk = unwrap_grant(Some(&private_key()), &grant, "mission-1", now).unwrap();
    // Same master key and (sorted) scope as hkdf[0]: same MDK.
    assert_eq!(
        hex(mdk.expose()),
        "db9959733f5e25b1031cf0d1163f2ad9836f81a8f2e582688fa0a0b61d3b4ed8"
    );
    // Usable as an enc:1: key.
    let blob = encrypt_value(&json!({"t": "x"}), mdk.expose(), None).unwrap();
    assert_eq!(
        decrypt_value(&blob, mdk.expose()).unwrap(),
        json!({"t": "x"})
    );

    // RSA-OAEP is randomized: minting twice gives different wrapped keys, same MDK.
    let again = mint();
    assert_ne!(again["wrappedKey"], grant["wrappedKey"]);
    assert_eq!(
        unwrap_grant(Some(&private_key()), &again, "mission-1", now).unwrap(),
        mdk
    );
}

#[test]
fn mint_ttl_and_validation() {
    let master = [1u8; 32];
    let pk = public_key();
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let t = vec!["notes".to_string()];
    let ids = vec!["notes:1".to_string()];
    let cases = [
        (Some(1), "2026-01-01T01:00:00.000Z"),
        (Some(7_200_000), "2026-01-01T02:00:00.000Z"),
        (Some(i64::MAX), "2026-01-31T00:00:00.000Z"),
        (None, "2026-01-08T00:00:00.000Z"),
    ];
    for (ttl, want) in cases {
        let g = mint_grant(&master, &pk, "m", &t, &ids, ttl, now).unwrap();
        assert_eq!(g["expiresAt"], json!(want), "{ttl:?}");
    }
    let err = |tables: &[String], ids: &[String], mk: &[u8]| {
        mint_grant(mk, &pk, "m", tables, ids, None, now).unwrap_err()
    };
    assert_eq!(err(&[], &ids, &master), MintError::EmptyTables);
    assert_eq!(err(&t, &[], &master), MintError::EmptyRecordIds);
    let many: Vec<String> = (0..1001).map(|i| format!("notes:{i}")).collect();
    assert_eq!(err(&t, &many, &master), MintError::TooManyRecordIds);
    assert!(mint_grant(&master, &pk, "m", &t, &many[..1000], None, now).is_ok());
    assert_eq!(
        err(&t, &ids, &[1u8; 16]).to_string(),
        "shared-ai/grant: expected 32-byte master key, got 16"
    );
    assert_eq!(
        MintError::EmptyTables.to_string(),
        "tables must be a non-empty array"
    );
    assert_eq!(
        MintError::EmptyRecordIds.to_string(),
        "recordIds must be a non-empty array"
    );
    assert_eq!(
        MintError::TooManyRecordIds.to_string(),
        "recordIds must not exceed 1000 entries"
    );
}

#[test]
fn generated_keypair_round_trips() {
    let (private_pem, public_pem) = generate_keypair().unwrap();
    assert!(private_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert!(private_pem.ends_with("-----END PRIVATE KEY-----\n"));
    assert!(public_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    let private = GrantPrivateKey::from_pem(&private_pem).unwrap();
    let public = GrantPublicKey::from_pem(&public_pem).unwrap();
    assert_eq!((private.bits(), public.bits()), (2048, 2048));
    assert_eq!(public.to_pem().unwrap(), public_pem);
    let g = mint_grant(
        &[3u8; 32],
        &public,
        "m-x",
        &["notes".into()],
        &["notes:a".into()],
        Some(3_600_000),
        now_2026(),
    )
    .unwrap();
    assert!(unwrap_grant(Some(&private), &g, "m-x", now_2026()).is_ok());
}

// ---------------------------------------------------------------------------------------
// enc:1:

#[test]
fn enc1_vectors() {
    for (i, v) in section("enc1").iter().enumerate() {
        let key = key32(v["keyHex"].as_str().unwrap());
        let value = &v["value"];
        match &v["blob"] {
            Value::Null => {
                // null is never wrapped: it is not encrypted and passes through unchanged.
                assert!(value.is_null(), "enc1[{i}]");
                assert!(!is_encrypted_value(&v["blob"]));
                assert_eq!(unwrap_value(&Value::Null, &key).unwrap(), Value::Null);
                assert_eq!(
                    encrypt_value(&Value::Null, &key, None).unwrap_err(),
                    EncryptError::NullNotWrapped
                );
            }
            Value::String(blob) => {
                assert!(is_encrypted(blob), "enc1[{i}]");
                assert_eq!(&decrypt_value(blob, &key).unwrap(), value, "enc1[{i}]");
                assert_eq!(&unwrap_value(&v["blob"], &key).unwrap(), value, "enc1[{i}]");
                // Re-encrypting with the vector's IV reproduces the blob byte for byte,
                // i.e. our plaintext serialization equals JSON.stringify for these values.
                let iv_b64 = blob[ENC_PREFIX.len()..].split_once('.').unwrap().0;
                let iv: [u8; 12] = decode_forgiving(iv_b64).unwrap().try_into().unwrap();
                assert_eq!(
                    &encrypt_value(value, &key, Some(iv)).unwrap(),
                    blob,
                    "enc1[{i}] re-encrypt"
                );
            }
            other => panic!("enc1[{i}]: unexpected blob {other}"),
        }
    }
}

#[test]
fn enc1_bad_vectors() {
    for (i, v) in section("enc1Bad").iter().enumerate() {
        let key = key32(v["keyHex"].as_str().unwrap());
        let blob = v["blob"].as_str().unwrap();
        let err = decrypt_value(blob, &key).unwrap_err();
        let (kind_ok, reason) = match v["expect"].as_str().unwrap() {
            "auth-failure" => (
                err == DecryptError::AuthFailed,
                "ciphertext-tampered-or-wrong-key",
            ),
            "malformed-no-separator" => (
                err == DecryptError::MissingSeparator,
                "ciphertext-malformed",
            ),
            "bad-iv-length" => (
                matches!(err, DecryptError::BadIvLength { got: 8 })
                    && err.to_string().contains("expected 12-byte IV, got 8"),
                "ciphertext-malformed",
            ),
            other => panic!("enc1Bad[{i}]: unknown expectation {other:?}"),
        };
        assert!(kind_ok, "enc1Bad[{i}]: got {err:?}");
        assert_eq!(err.reason(), reason, "enc1Bad[{i}]");
    }
}

#[test]
fn enc1_tampered_tag_is_detected() {
    let v = &section("enc1")[0];
    let key = key32(v["keyHex"].as_str().unwrap());
    let blob = v["blob"].as_str().unwrap();
    let (iv, ct) = blob[ENC_PREFIX.len()..].split_once('.').unwrap();
    let mut raw = decode_forgiving(ct).unwrap();
    let n = raw.len();
    raw[n - 1] ^= 0x01; // last tag byte
    let bad = format!("{ENC_PREFIX}{iv}.{}", encode_standard(&raw));
    let err = decrypt_value(&bad, &key).unwrap_err();
    assert_eq!(err, DecryptError::AuthFailed);
    assert_eq!(err.reason(), "ciphertext-tampered-or-wrong-key");
}

// ---------------------------------------------------------------------------------------
// secrets never leak

#[test]
fn no_error_or_debug_text_contains_key_bytes() {
    let master = unhex("00070e151c232a31383f464d545b626970777e858c939aa1a8afb6bdc4cbd2d9");
    let priv_key = private_key();
    let pub_key = public_key();
    let d = derivation_of(&section("hkdf")[0]["derivation"]);
    let mdk = derive_mission_data_key(&master, &d).unwrap();
    let enc_key = key32("41484f565d646b727980878e959ca3aab1b8bfc6cdd4dbe2e9f0f7fe050c131a");
    let pkcs8 = pem_to_der(vectors()["rsa"]["privateKeyPem"].as_str().unwrap()).unwrap();

    let mut texts: Vec<String> = vec![
        format!("{mdk:?}"),
        format!("{priv_key:?}"),
        format!("{pub_key:?}"),
        format!("{:?}", DeriveError::MasterKeyLength { got: 3 }),
        derive_mission_data_key(&master[..5], &d)
            .unwrap_err()
            .to_string(),
        format!("{:?}", KeyError::Rejected("x")),
    ];
    for f in UnwrapFailure::ALL {
        texts.push(format!("{f:?} {f}"));
    }
    let blob = encrypt_value(&json!("plain-secret"), &enc_key, Some([9; 12])).unwrap();
    for bad in [
        blob.replace('.', ""),
        blob.replacen("enc:1:", "enc:1:AAAA", 1),
        format!("{blob}A"),
        blob.clone(),
    ] {
        let r = decrypt_value(&bad, mdk.expose());
        texts.push(format!("{r:?}"));
        if let Err(e) = r {
            texts.push(e.to_string());
        }
    }
    for e in [
        EncryptError::NullNotWrapped,
        EncryptError::Rng,
        EncryptError::Seal,
    ] {
        texts.push(format!("{e:?} {e}"));
    }
    for e in [
        mint_grant(
            &master[..31],
            &pub_key,
            "m",
            &["t".into()],
            &["t:1".into()],
            None,
            now_2026(),
        )
        .unwrap_err(),
        MintError::Wrap,
        MintError::EmptyTables,
    ] {
        texts.push(format!("{e:?} {e}"));
    }
    let mut broken = pkcs8.to_vec();
    broken.truncate(200);
    let e = GrantPrivateKey::from_der(&broken).unwrap_err();
    texts.push(format!("{e:?} {e}"));

    let secrets = [
        hex(&master),
        hex(mdk.expose()),
        hex(&enc_key),
        hex(&pkcs8[pkcs8.len() - 40..]),
    ];
    for t in &texts {
        let lower = t.to_lowercase();
        for s in &secrets {
            // any 8-byte window of a secret, in hex, would be a leak
            for w in 0..(s.len() / 2 - 8) {
                let window = &s[2 * w..2 * w + 16];
                assert!(!lower.contains(window), "{t:?} leaks key bytes");
            }
        }
        assert!(!t.contains("plain-secret"), "{t:?} leaks plaintext");
        // nor as a Debug-printed byte array
        for key in [&master[..], &mdk.expose()[..], &enc_key[..]] {
            let decimal = format!("{:?}", &key[..6]);
            assert!(
                !t.contains(decimal.trim_matches(|c| c == '[' || c == ']')),
                "{t:?}"
            );
        }
    }
    assert!(texts.iter().any(|t| t.contains("redacted")));
}
