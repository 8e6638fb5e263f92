//! What a certificate should say (`Spec`, from the arguments), what an existing one says
//! (`Existing`), and the differences that make it be issued again.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde_json::{json, Value};

use crate::shared::inspect::sha256;

use super::keys::{now, serial};
use super::{Args, DAY};

pub(super) const KEY_USAGES: [&str; 7] = [
    "digitalSignature",
    "contentCommitment",
    "keyEncipherment",
    "dataEncipherment",
    "keyAgreement",
    "keyCertSign",
    "cRLSign",
];
pub(super) const EXT_KEY_USAGES: [&str; 6] = [
    "serverAuth",
    "clientAuth",
    "codeSigning",
    "emailProtection",
    "timeStamping",
    "ocspSigning",
];

pub(super) fn ku_purpose(name: &str) -> rcgen::KeyUsagePurpose {
    use rcgen::KeyUsagePurpose::*;
    match name {
        "digitalSignature" => DigitalSignature,
        "contentCommitment" => ContentCommitment,
        "keyEncipherment" => KeyEncipherment,
        "dataEncipherment" => DataEncipherment,
        "keyAgreement" => KeyAgreement,
        "keyCertSign" => KeyCertSign,
        _ => CrlSign,
    }
}

pub(super) fn eku_purpose(name: &str) -> rcgen::ExtendedKeyUsagePurpose {
    use rcgen::ExtendedKeyUsagePurpose::*;
    match name {
        "serverAuth" => ServerAuth,
        "clientAuth" => ClientAuth,
        "codeSigning" => CodeSigning,
        "emailProtection" => EmailProtection,
        "timeStamping" => TimeStamping,
        _ => OcspSigning,
    }
}

/// What a certificate should say (the parts that are compared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub common_name: String,
    pub organization: Option<String>,
    pub dns: BTreeSet<String>,
    pub ips: BTreeSet<IpAddr>,
    pub key_usage: BTreeSet<String>,
    pub ext_key_usage: BTreeSet<String>,
}

/// What an existing certificate says, and how it relates to our CA and the key next to it.
#[derive(Debug, Clone)]
pub struct Existing {
    pub spec: Spec,
    pub is_ca: bool,
    /// Seconds since the epoch.
    pub not_after: i64,
    /// Its signature verifies with our CA's public key.
    pub signed_by_ca: bool,
    /// Its SubjectPublicKeyInfo (DER).
    pub spki: Vec<u8>,
}

/// Why a certificate must be (re)issued; empty when the existing one is kept.
///
/// `ca_exists` false means the CA is not created yet (check mode on a first run); `key_spki` is
/// the public key of the key on the target, None when it is missing or unreadable.
pub fn reasons(
    want: &Spec,
    have: Option<&Existing>,
    ca_exists: bool,
    key_spki: Option<&[u8]>,
    now: i64,
    renew_before_days: u32,
) -> Vec<String> {
    let Some(have) = have else {
        return vec!["missing".into()];
    };
    let mut why = Vec::new();
    let got = &have.spec;
    if got.common_name != want.common_name {
        why.push(format!(
            "common name {} -> {}",
            got.common_name, want.common_name
        ));
    }
    if got.organization != want.organization {
        let show = |o: &Option<String>| o.clone().unwrap_or_else(|| "(none)".into());
        why.push(format!(
            "organization {} -> {}",
            show(&got.organization),
            show(&want.organization)
        ));
    }
    let names = |s: &BTreeSet<IpAddr>| s.iter().map(|i| i.to_string()).collect::<Vec<_>>();
    let (want_ips, got_ips) = (names(&want.ips), names(&got.ips));
    for (label, wanted, present) in [
        (
            "SAN",
            want.dns.iter().cloned().collect::<Vec<_>>(),
            got.dns.iter().cloned().collect::<Vec<_>>(),
        ),
        ("SAN", want_ips, got_ips),
        (
            "key usage",
            want.key_usage.iter().cloned().collect(),
            got.key_usage.iter().cloned().collect(),
        ),
        (
            "extended key usage",
            want.ext_key_usage.iter().cloned().collect(),
            got.ext_key_usage.iter().cloned().collect(),
        ),
    ] {
        for w in wanted.iter().filter(|w| !present.contains(w)) {
            why.push(format!("{label} {w} missing"));
        }
        for p in present.iter().filter(|p| !wanted.contains(p)) {
            why.push(format!("{label} {p} not wanted"));
        }
    }
    if have.is_ca {
        why.push("is a CA certificate".into());
    }
    if !ca_exists {
        why.push("CA not created yet".into());
    } else if !have.signed_by_ca {
        why.push("issuer differs".into());
    }
    let left = have.not_after - now;
    if left < 0 {
        why.push(format!("expired {} days ago", (-left) / DAY));
    } else if left < i64::from(renew_before_days) * DAY {
        why.push(format!("expires in {} days", left / DAY));
    }
    match key_spki {
        None => why.push("key missing or unreadable".into()),
        Some(k) if k != have.spki.as_slice() => why.push("key does not match".into()),
        _ => {}
    }
    why
}

/// Reads the first certificate of a PEM text. `ca_spki` is our CA's public key (DER), to verify
/// the signature with.
pub fn parse_existing(pem: &[u8], ca_cert_der: Option<&[u8]>) -> Result<Existing, String> {
    use x509_parser::extensions::GeneralName;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| e.to_string())?;
    let cert = pem.parse_x509().map_err(|e| e.to_string())?;
    let first = |mut it: Box<
        dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue> + '_,
    >| { it.next().and_then(|a| a.as_str().ok()).map(str::to_string) };
    let subject = cert.subject();
    let common_name = first(Box::new(subject.iter_common_name())).unwrap_or_default();
    let organization = first(Box::new(subject.iter_organization()));
    let (mut dns, mut ips) = (BTreeSet::new(), BTreeSet::new());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => {
                    dns.insert(d.to_string());
                }
                GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        ips.insert(IpAddr::from(a));
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        ips.insert(IpAddr::from(a));
                    }
                }
                _ => {}
            }
        }
    }
    let mut key_usage = BTreeSet::new();
    if let Ok(Some(ku)) = cert.key_usage() {
        let k = ku.value;
        for (name, on) in [
            ("digitalSignature", k.digital_signature()),
            ("contentCommitment", k.non_repudiation()),
            ("keyEncipherment", k.key_encipherment()),
            ("dataEncipherment", k.data_encipherment()),
            ("keyAgreement", k.key_agreement()),
            ("keyCertSign", k.key_cert_sign()),
            ("cRLSign", k.crl_sign()),
        ] {
            if on {
                key_usage.insert(name.to_string());
            }
        }
    }
    let mut ext_key_usage = BTreeSet::new();
    if let Ok(Some(eku)) = cert.extended_key_usage() {
        let e = eku.value;
        for (name, on) in [
            ("serverAuth", e.server_auth),
            ("clientAuth", e.client_auth),
            ("codeSigning", e.code_signing),
            ("emailProtection", e.email_protection),
            ("timeStamping", e.time_stamping),
            ("ocspSigning", e.ocsp_signing),
            ("any", e.any),
        ] {
            if on {
                ext_key_usage.insert(name.to_string());
            }
        }
        for o in &e.other {
            ext_key_usage.insert(o.to_id_string());
        }
    }
    let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    let signed_by_ca = match ca_cert_der {
        Some(der) => match x509_parser::parse_x509_certificate(der) {
            Ok((_, ca)) => {
                cert.issuer() == ca.subject()
                    && cert.verify_signature(Some(ca.public_key())).is_ok()
            }
            Err(_) => false,
        },
        None => false,
    };
    Ok(Existing {
        spec: Spec {
            common_name,
            organization,
            dns,
            ips,
            key_usage,
            ext_key_usage,
        },
        is_ca,
        not_after: cert.validity().not_after.timestamp(),
        signed_by_ca,
        spki: cert.public_key().raw.to_vec(),
    })
}

pub(super) fn distinguished_name(cn: &str, org: Option<&str>) -> rcgen::DistinguishedName {
    let mut dn = rcgen::DistinguishedName::new();
    if let Some(o) = org {
        dn.push(rcgen::DnType::OrganizationName, o);
    }
    dn.push(rcgen::DnType::CommonName, cn);
    dn
}

pub(super) fn set_validity(params: &mut rcgen::CertificateParams, days: u32) {
    let now = now();
    // An hour back, for clocks that are a little behind the controller's.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
    params.serial_number = Some(serial());
}

/// The result a task registers for a certificate.
pub(super) fn cert_result(args: &Args, pem: &str) -> Value {
    let mut r = json!({ "cert": args.cert, "key": args.key, "certificate": pem });
    if let Ok((_, p)) = x509_parser::pem::parse_x509_pem(pem.as_bytes()) {
        r["sha256"] = sha256(&p.contents).into();
        if let Ok(c) = p.parse_x509() {
            r["serial"] = c.raw_serial_as_string().replace(':', "").into();
            r["not_after"] = c
                .validity()
                .not_after
                .to_datetime()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
                .into();
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            common_name: "api".into(),
            organization: None,
            dns: ["api.local".to_string()].into(),
            ips: ["10.0.0.5".parse().unwrap()].into(),
            key_usage: ["digitalSignature".to_string()].into(),
            ext_key_usage: ["serverAuth".to_string()].into(),
        }
    }

    fn existing() -> Existing {
        Existing {
            spec: spec(),
            is_ca: false,
            not_after: 1000 * DAY,
            signed_by_ca: true,
            spki: vec![1, 2, 3],
        }
    }

    #[test]
    fn keeps_a_matching_certificate_and_names_every_difference() {
        let key = [1u8, 2, 3];
        let r = |have: &Existing, now: i64| reasons(&spec(), Some(have), true, Some(&key), now, 30);
        assert!(r(&existing(), 0).is_empty());
        assert_eq!(reasons(&spec(), None, true, None, 0, 30), ["missing"]);

        let mut other = existing();
        other.spec.ips = ["10.0.0.6".parse().unwrap()].into();
        other.spec.dns.insert("old.local".into());
        other.spec.common_name = "apx".into();
        other.spec.ext_key_usage.insert("clientAuth".into());
        assert_eq!(
            r(&other, 0),
            [
                "common name apx -> api",
                "SAN old.local not wanted",
                "SAN 10.0.0.5 missing",
                "SAN 10.0.0.6 not wanted",
                "extended key usage clientAuth not wanted",
            ]
        );

        assert_eq!(r(&existing(), 990 * DAY), ["expires in 10 days"]);
        assert!(r(&existing(), 969 * DAY).is_empty(), "31 days left is fine");
        assert_eq!(r(&existing(), 1003 * DAY), ["expired 3 days ago"]);

        let mut foreign = existing();
        foreign.signed_by_ca = false;
        assert_eq!(r(&foreign, 0), ["issuer differs"]);
        assert_eq!(
            reasons(&spec(), Some(&existing()), false, Some(&key), 0, 30),
            ["CA not created yet"]
        );
        assert_eq!(
            reasons(&spec(), Some(&existing()), true, Some(&[9]), 0, 30),
            ["key does not match"]
        );
        assert_eq!(
            reasons(&spec(), Some(&existing()), true, None, 0, 30),
            ["key missing or unreadable"]
        );
    }
}
