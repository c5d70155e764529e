//! The TLS bootstrap's tests: minting, reuse, renewal, user-managed sets
//! and every refusal, on real files.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::Permissions;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::thread;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PublicKeyData,
};

use crate::env::DOCKER_TLS_SAN;

use super::*;

mod faults;

/// docker:dind's default, as the CLI passes it.
const DEFAULT_VALIDITY: Duration = Duration::from_secs(825 * DAY);

/// `openssl ecparam -name prime256v1 -genkey`: SEC1, after an EC PARAMETERS block.
const SEC1_P256_KEY: &str = "-----BEGIN EC PARAMETERS-----
BggqhkjOPQMBBw==
-----END EC PARAMETERS-----
-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIH3v/CNMDbYGJpa3HGMAwFXil+92/T83+60671sh0oDvoAoGCCqGSM49
AwEHoUQDQgAEZQIrS6Q61d3xF02Rwnjp/bX8O8AdQUYAwFk8nVLb0IR5/Q22XZdF
OdbEZGCbhR6RsobxwYfyX47yA37n1kaRaw==
-----END EC PRIVATE KEY-----
";

/// `openssl genrsa -traditional 2048`: PKCS#1, as OpenSSL 1.1 wrote it in
/// older docker:dind volumes.
const PKCS1_RSA_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEpAIBAAKCAQEA1jOhS5xwPwrrPxNibm7GWQZMlojDoAq4IgEkSTFiWAYZyqSa
fZZ561EpwLIfWnTFqn6wbDJ7E80VWotca7b3vvYip7ymKxdk0nB5eJkoeQEE2zK3
lP9bru45LQUrEl+YF9lU3+9EuzDLeSEYEXb9AbVIVX2cNW6xirrM5ON7x6GeCzxe
mtYGhY9kZ2FVAmgIgu9Kt4sm55WUgcnj7KE5sqSXPIO74ojd9M155qzJlju6KZJj
e+R0r7lyeQMpctSVWUQCZXjpumNmSn0wj/53KXXZ5I9WYrGriUgOqGCTgy9gTggX
fQtXAWQJ2D5Qm8WkMKSYmHMqmO7B7LS1g4fgFwIDAQABAoIBAAWelngHWKKEGiaD
eazwAbV1htjZfwMEhPl6EjD2t1/GeTK/HWvMtidy76d7L3tjXjQviAKuqFqdTMFy
r9qw6CWoYMG0dJ+OHjpZx7YJk+2Ta0SHkMK7QvUp5sdu6pxcHv9b15rbChs8bSTL
tiKZ0+ARmMjgDL28yQecsvdmSGm09XOneoL0pn6TlP2R0Tgmt2eSty1ieWh82bXb
WhlDmDAgmV+b88txmtVtfoUt1fiRrHQIqIOuCDEpeZgyfIyHPIL98+DEFFFSMRX3
2UenFkinUxHq7iRGWY3javt8MYGYZSo6uv2+7dUa/p4GOs0uILAJyPgU+cTtn2rj
yxVMXcECgYEA65pue6pKd+CjEX2XZyVo4vf1I3Te8QJJP8FCDNQiQdr6HF2Tmpob
KfC91SKBA3MHwBDmrVXZ4hf2pegy7sDubrdIYbdsLctYq/1L9Mh0/5KgqrZgbXLH
uUz4S8sI50z3OeeGd/bx3BtWO5z4Bg8uQhuRLiFUqD4D5zIpEWBus9ECgYEA6L7i
m5qb0amtKFs5x9mhm4YYaovISINi1Zb6yzEPR342N7zkTqMLycyflUe9t+Hw0m9C
6DnpcBHng1uyCpmDIT0P8kQ9zq89MTH0TG4+odCQI2GzauRTfRHICbQSiYBIz/LH
6xduz13XQIfHm4lgNmG8aRhuI/hXGWMDdLmp12cCgYEAsU+WGoe8Z5+t2bn1OfFT
kI0f9kE8j5Ey40JknRcBeSJ93N8n+NBF5TiDBWZkRd5KVOfjU0wrIBb8zzuDKWAV
kUlqte+/AG/rGfUVNvGt67HELPX4eCZL3U7qBtCUsM6huPhfoOU+fHIuYcrudlDy
dVod1uPKvJt/gH2lnqg+aCECgYAdEkrH2OYBqEoCsnJjLiHrhTJjjJY1yIN93l/x
JW2dJnyrNaLm16LPUAnW4aEm6Mfl4RPgYetwnivm0ntIq6gfbLsjLbbyrBzemjjD
mzmjiKOYZ8m7Xk23X5M28xElr6ponxCtor2qlTQf0VXzbZNg95BLKEwJnily+FUk
LVSznQKBgQDQDG/37TUaeIlWa4VHWZujLeFajKDl3VjvP+x+UXd8iAOQsG84mq0I
i1jpoV8pP2f1e2TJPb2lOuumvVZoPUO9suzZF8wl+4cog9xg/e6jx85nBDRG5/Ox
qPIgpm1HXB6fOlhF24GjuZv9u/uu6ycaNVUe3lsb6ejXHCoILpDukQ==
-----END RSA PRIVATE KEY-----
";

fn test_sans() -> Vec<San> {
    assemble_sans(
        Some("testhost"),
        "127.0.0.1 localhost\n10.1.2.3 testhost.example.com testhost\n",
        [
            IpAddr::from([10, 1, 2, 3]),
            "fe80::1".parse().unwrap(),
            "fd00::3".parse().unwrap(),
        ],
        &[
            San::Dns("Extra.Example".into()),
            San::Ip("192.0.2.7".parse().unwrap()),
        ],
    )
}

fn spec(tmp: &Path) -> CertSpec {
    CertSpec {
        dir: tmp.join("certs"),
        key_type: KeyType::EcdsaP256,
        validity: DEFAULT_VALIDITY,
        sans: test_sans(),
    }
}

/// Every file and directory under `dir`, hidden ones included, with
/// contents and mode.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let bytes = if meta.is_dir() {
                todo.push(path.clone());
                Vec::new()
            } else {
                fs::read(&path).unwrap()
            };
            out.insert(path, (bytes, meta.mode() & 0o7777));
        }
    }
    out
}

fn temporaries(dir: &Path) -> Vec<PathBuf> {
    snapshot(dir)
        .into_keys()
        .filter(|p| p.to_string_lossy().contains(".tmp-"))
        .collect()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().mode() & 0o7777
}

fn ders(path: &Path) -> Vec<Vec<u8>> {
    parse_cert_pem(&fs::read(path).unwrap()).unwrap()
}

fn key(path: &Path) -> KeyPair {
    parse_key_pem(&fs::read(path).unwrap()).unwrap()
}

/// The message, checked to be the one line the operator sees.
fn one_line(err: &CertError) -> String {
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "multi-line error: {msg}");
    msg
}

/// Checks `cert` against `ca` and `key` the way a TLS peer would care.
fn assert_chain(cert: &Path, key_path: &Path, ca: &Path) {
    let ca_der = ders(ca).remove(0);
    let cert_der = ders(cert).remove(0);
    let ca = parse_x509(&ca_der).unwrap();
    let leaf = parse_x509(&cert_der).unwrap();
    leaf.verify_signature(Some(ca.public_key()))
        .unwrap_or_else(|e| panic!("{} does not verify: {e}", cert.display()));
    assert!(
        key_matches(&key(key_path), &leaf),
        "{} does not match {}",
        cert.display(),
        key_path.display()
    );
}

/// The server and client sets each chain to their ca.pem with their key.
fn assert_leaves_chain(paths: &Paths) {
    assert_chain(
        &paths.server_cert(),
        &paths.server_key(),
        &paths.server_ca(),
    );
    assert_chain(
        &paths.client_cert(),
        &paths.client_key(),
        &paths.client_ca(),
    );
}

fn reissue_server_cert(paths: &Paths, sans: &[San], validity: Duration) {
    let ca_key = key(&paths.ca_key());
    let ca_der = ders(&paths.ca_cert()).remove(0);
    let issuer = Issuer::from_ca_cert_der(&ca_der.as_slice().into(), &ca_key).unwrap();
    let cert = issue_leaf(
        Leaf::Server,
        &key(&paths.server_key()),
        &issuer,
        sans,
        validity,
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    fs::write(paths.server_cert(), cert.pem()).unwrap();
}

/// A CA that is not ours, as a user-managed PKI would have.
struct Foreign {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn foreign_ca(cn: &str, parent: Option<&Foreign>) -> Foreign {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    params.distinguished_name.push(DnType::CommonName, cn);
    let cert = match parent {
        None => params.self_signed(&key).unwrap(),
        Some(parent) => params.signed_by(&key, &parent.issuer).unwrap(),
    };
    Foreign {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// Server key and certificate PEMs signed by `ca`.
fn foreign_leaf(ca: &Foreign, not_after: Option<OffsetDateTime>) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["docker".to_owned()]).unwrap();
    if let Some(not_after) = not_after {
        params.not_before = not_after - Duration::from_secs(2 * DAY);
        params.not_after = not_after;
    }
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (key.serialize_pem(), cert.pem())
}

fn write_user_pki(paths: &Paths, ca_pem: &str, cert_pem: &str, key_pem: &str) {
    fs::create_dir_all(paths.server_dir()).unwrap();
    fs::write(paths.server_ca(), ca_pem).unwrap();
    fs::write(paths.server_cert(), cert_pem).unwrap();
    fs::write(paths.server_key(), key_pem).unwrap();
}

#[test]
fn fresh_mint_writes_the_docker_dind_layout_with_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    let paths = Paths::new(&spec.dir);

    let report = ensure(&spec).unwrap();

    assert_eq!(
        (report.ca, report.server, report.client),
        (Action::Minted, Action::Minted, Action::Minted)
    );
    for (path, want) in [
        (paths.ca_key(), 0o600),
        (paths.ca_cert(), 0o644),
        (paths.server_key(), 0o600),
        (paths.server_cert(), 0o644),
        (paths.server_ca(), 0o644),
        (paths.client_key(), 0o644),
        (paths.client_cert(), 0o644),
        (paths.client_ca(), 0o644),
        (paths.dir().to_owned(), 0o755),
        (paths.ca_dir(), 0o755),
        (paths.server_dir(), 0o755),
        (paths.client_dir(), 0o755),
    ] {
        assert_eq!(mode(&path), want, "mode of {}", path.display());
    }
    // Exactly the stock layout: 9 files in 3 directories, no lock file,
    // no leftovers.
    let files: Vec<_> = snapshot(paths.dir())
        .into_iter()
        .filter(|(p, _)| p.is_file())
        .map(|(p, _)| p.strip_prefix(paths.dir()).unwrap().to_owned())
        .collect();
    let want: Vec<PathBuf> = [
        "ca/cert.pem",
        "ca/key.pem",
        "client/ca.pem",
        "client/cert.pem",
        "client/key.pem",
        "server/ca.pem",
        "server/cert.pem",
        "server/key.pem",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    assert_eq!(files, want);
    let ca = fs::read(paths.ca_cert()).unwrap();
    assert_eq!(fs::read(paths.server_ca()).unwrap(), ca);
    assert_eq!(fs::read(paths.client_ca()).unwrap(), ca);
    assert_eq!(report.server_cert.path, paths.server_cert());
    assert_eq!(report.ca_cert.path, paths.ca_cert());
    let now = OffsetDateTime::now_utc();
    let days_left = (report.server_cert.not_after - now).whole_days();
    assert!((823..=825).contains(&days_left), "{days_left} days");
}

#[test]
fn minted_certificates_chain_and_carry_the_right_extensions() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    let paths = Paths::new(&spec.dir);
    let report = ensure(&spec).unwrap();

    assert_leaves_chain(&paths);
    assert_chain(&paths.ca_cert(), &paths.ca_key(), &paths.ca_cert());

    let ca_der = ders(&paths.ca_cert()).remove(0);
    let ca = parse_x509(&ca_der).unwrap();
    let bc = ca.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    assert!(ca.key_usage().unwrap().unwrap().value.key_cert_sign());
    assert_eq!(ca.subject().to_string(), format!("CN={CA_CN}"));

    let server_der = ders(&paths.server_cert()).remove(0);
    let server = parse_x509(&server_der).unwrap();
    let eku = server.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    assert!(!server.is_ca());
    let sans = cert_sans(&server);
    for want in [
        "DNS:docker",
        "DNS:localhost",
        "DNS:testhost",
        "DNS:testhost.example.com",
        "DNS:extra.example",
        "IP:127.0.0.1",
        "IP:::1",
        "IP:10.1.2.3",
        "IP:fd00::3",
        "IP:192.0.2.7",
    ] {
        assert!(
            sans.iter().any(|s| s.to_string() == want),
            "{want} missing from {sans:?}"
        );
    }
    assert!(!sans.contains(&San::Ip("fe80::1".parse().unwrap())));
    assert_eq!(sans, spec.sans.iter().cloned().collect());

    let client_der = ders(&paths.client_cert()).remove(0);
    let client = parse_x509(&client_der).unwrap();
    let eku = client.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    assert_eq!(client.subject().to_string(), format!("CN={CLIENT_CN}"));

    // Fresh serials, not rcgen's hash of the public key.
    assert_ne!(server.raw_serial(), client.raw_serial());
    assert_eq!(
        report.server_cert.sha256_fingerprint,
        fingerprint(&server_der)
    );
    let fp = &report.ca_cert.sha256_fingerprint;
    assert_eq!(fp.len(), 32 * 3 - 1);
    assert!(fp.split(':').all(|b| b.len() == 2
        && b.bytes()
            .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))));
}

#[test]
fn second_ensure_reuses_every_file_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    let first = ensure(&spec).unwrap();
    let before = snapshot(&spec.dir);

    let second = ensure(&spec).unwrap();

    assert_eq!(
        (second.ca, second.server, second.client),
        (Action::Reused, Action::Reused, Action::Reused)
    );
    assert_eq!(snapshot(&spec.dir), before);
    assert_eq!(second.ca_cert, first.ca_cert);
    assert_eq!(second.server_cert, first.server_cert);
}

#[test]
fn sans_in_another_order_are_the_same_set() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = spec(tmp.path());
    ensure(&spec).unwrap();
    spec.sans.reverse();
    spec.sans.push(San::Dns("DOCKER".into()));

    assert_eq!(ensure(&spec).unwrap().server, Action::Reused);
}

#[test]
fn changed_sans_reissue_only_the_server_cert_with_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = spec(tmp.path());
    let paths = Paths::new(&spec.dir);
    ensure(&spec).unwrap();
    let before = snapshot(&spec.dir);

    spec.sans.push(San::Dns("new.example".into()));
    let report = ensure(&spec).unwrap();

    assert_eq!(
        (report.ca, report.server, report.client),
        (
            Action::Reused,
            Action::Reissued("SANs changed"),
            Action::Reused
        )
    );
    let after = snapshot(&spec.dir);
    let changed: Vec<_> = after
        .iter()
        .filter(|(p, v)| before.get(*p) != Some(v))
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(changed, [paths.server_cert()]);
    assert_chain(
        &paths.server_cert(),
        &paths.server_key(),
        &paths.server_ca(),
    );
    let server_der = ders(&paths.server_cert()).remove(0);
    assert!(cert_sans(&parse_x509(&server_der).unwrap()).contains(&San::Dns("new.example".into())));
}

#[test]
fn server_cert_expiring_within_30_days_is_reissued() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    let paths = Paths::new(&spec.dir);
    ensure(&spec).unwrap();
    reissue_server_cert(&paths, &spec.sans, Duration::from_secs(29 * DAY));
    let key_before = fs::read(paths.server_key()).unwrap();

    let report = ensure(&spec).unwrap();

    assert_eq!(report.server, Action::Reissued("expiring"));
    assert_eq!((report.ca, report.client), (Action::Reused, Action::Reused));
    assert_eq!(fs::read(paths.server_key()).unwrap(), key_before);
    assert!(
        report.server_cert.not_after > OffsetDateTime::now_utc() + Duration::from_secs(800 * DAY)
    );
    assert_chain(
        &paths.server_cert(),
        &paths.server_key(),
        &paths.server_ca(),
    );

    // 31 days left is not "expiring".
    reissue_server_cert(&paths, &spec.sans, Duration::from_secs(31 * DAY));
    assert_eq!(ensure(&spec).unwrap().server, Action::Reused);
}

#[test]
fn expiring_ca_cert_is_reissued_from_its_key_and_leaves_follow() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = spec(tmp.path());
    let paths = Paths::new(&spec.dir);
    spec.validity = Duration::from_secs(10 * DAY);
    ensure(&spec).unwrap();
    let keys: Vec<_> = [paths.ca_key(), paths.server_key(), paths.client_key()]
        .iter()
        .map(|p| fs::read(p).unwrap())
        .collect();

    spec.validity = DEFAULT_VALIDITY;
    let report = ensure(&spec).unwrap();

    assert_eq!(
        (report.ca, report.server, report.client),
        (
            Action::Reissued("expiring"),
            Action::Reissued("CA re-issued"),
            Action::Reissued("CA re-issued")
        )
    );
    for (path, before) in [paths.ca_key(), paths.server_key(), paths.client_key()]
        .iter()
        .zip(keys)
    {
        assert_eq!(
            fs::read(path).unwrap(),
            before,
            "{} changed",
            path.display()
        );
    }
    assert!(report.ca_cert.not_after > OffsetDateTime::now_utc() + Duration::from_secs(800 * DAY));
}

#[test]
fn missing_ca_cert_is_reissued_from_the_same_key_and_leaves_follow() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    let paths = Paths::new(&spec.dir);
    let first = ensure(&spec).unwrap();
    let before = snapshot(&spec.dir);
    fs::remove_file(paths.ca_cert()).unwrap();

    let report = ensure(&spec).unwrap();

    assert_eq!(
        (report.ca, report.server, report.client),
        (
            Action::Reissued("missing"),
            Action::Reissued("CA re-issued"),
            Action::Reissued("CA re-issued")
        )
    );
    assert_ne!(
        report.ca_cert.sha256_fingerprint,
        first.ca_cert.sha256_fingerprint
    );
    let after = snapshot(&spec.dir);
    for key in [paths.ca_key(), paths.server_key(), paths.client_key()] {
        assert_eq!(after[&key], before[&key], "{} changed", key.display());
    }
    let ca = fs::read(paths.ca_cert()).unwrap();
    assert_eq!(fs::read(paths.server_ca()).unwrap(), ca);
    assert_eq!(fs::read(paths.client_ca()).unwrap(), ca);
    assert_chain(&paths.ca_cert(), &paths.ca_key(), &paths.ca_cert());
    assert_leaves_chain(&paths);
}

#[test]
fn stale_ca_copy_and_wrong_modes_are_repaired_without_reissuing() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    let paths = Paths::new(&spec.dir);
    ensure(&spec).unwrap();
    let before = snapshot(&spec.dir);
    fs::write(paths.client_ca(), "stale").unwrap();
    fs::set_permissions(paths.client_key(), Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(paths.server_key(), Permissions::from_mode(0o644)).unwrap();
    fs::write(
        paths.client_dir().join(".cert.pem.tmp-4242"),
        "left by a crash",
    )
    .unwrap();

    let report = ensure(&spec).unwrap();

    assert_eq!(
        (report.ca, report.server, report.client),
        (Action::Reused, Action::Reused, Action::Reused)
    );
    let after = snapshot(&spec.dir);
    assert_eq!(after, before, "the set was not restored exactly");
    // The key went through the commit-marker dance: same bytes, new inode.
    assert_eq!(mode(&paths.client_key()), 0o644);
}

#[test]
fn user_managed_pki_is_verified_and_left_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    let paths = Paths::new(&spec.dir);
    let root = foreign_ca("corp root", None);
    let (key_pem, cert_pem) = foreign_leaf(&root, None);
    write_user_pki(&paths, &root.pem, &cert_pem, &key_pem);
    fs::set_permissions(paths.server_key(), Permissions::from_mode(0o640)).unwrap();
    let before = snapshot(&spec.dir);

    let report = ensure(&spec).unwrap();

    assert_eq!(
        (report.ca, report.server, report.client),
        (
            Action::UserManaged,
            Action::UserManaged,
            Action::UserManaged
        )
    );
    assert_eq!(
        snapshot(&spec.dir),
        before,
        "a user-managed PKI was written to"
    );
    assert_eq!(report.ca_cert.path, paths.server_ca());
    assert_eq!(
        report.ca_cert.sha256_fingerprint,
        fingerprint(&ders(&paths.server_ca())[0])
    );
}

#[test]
fn user_managed_chain_through_a_bundled_intermediate_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    let paths = Paths::new(&spec.dir);
    let root = foreign_ca("corp root", None);
    let other = foreign_ca("unrelated", None);
    let intermediate = foreign_ca("corp issuing", Some(&root));
    let (key_pem, cert_pem) = foreign_leaf(&intermediate, None);
    // A CA bundle whose second certificate is the anchor.
    let bundle = format!("{}{}", other.pem, root.pem);
    write_user_pki(
        &paths,
        &bundle,
        &format!("{cert_pem}{}", intermediate.pem),
        &key_pem,
    );

    let report = ensure(&spec).unwrap();

    assert_eq!(report.server, Action::UserManaged);
    assert_eq!(
        report.ca_cert.sha256_fingerprint,
        fingerprint(&ders(&paths.server_ca())[1])
    );
}

#[test]
fn user_managed_cert_not_signed_by_its_ca_is_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    let paths = Paths::new(&spec.dir);
    let (key_pem, cert_pem) = foreign_leaf(&foreign_ca("signer", None), None);
    write_user_pki(
        &paths,
        &foreign_ca("someone else", None).pem,
        &cert_pem,
        &key_pem,
    );
    let before = snapshot(&spec.dir);

    let err = ensure(&spec).unwrap_err();

    assert!(matches!(err, CertError::NotSignedBy { .. }), "{err:?}");
    let msg = one_line(&err);
    assert!(
        msg.starts_with(&format!(
            "certificate {} is not signed by {}: ",
            paths.server_cert().display(),
            paths.server_ca().display()
        )),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("remove {}", paths.server_dir().display())),
        "{msg}"
    );
    assert_eq!(snapshot(&spec.dir), before);
}

#[test]
fn user_managed_key_not_matching_its_cert_is_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    let paths = Paths::new(&spec.dir);
    let root = foreign_ca("corp root", None);
    let (_, cert_pem) = foreign_leaf(&root, None);
    let (other_key, _) = foreign_leaf(&root, None);
    write_user_pki(&paths, &root.pem, &cert_pem, &other_key);

    let err = ensure(&spec).unwrap_err();

    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err:?}");
    let msg = one_line(&err);
    assert!(
        msg.contains(&paths.server_cert().display().to_string()),
        "{msg}"
    );
    assert!(
        msg.contains(&paths.server_key().display().to_string()),
        "{msg}"
    );
}

#[test]
fn user_managed_expired_cert_is_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    let paths = Paths::new(&spec.dir);
    let root = foreign_ca("corp root", None);
    let yesterday = OffsetDateTime::now_utc() - Duration::from_secs(DAY);
    let (key_pem, cert_pem) = foreign_leaf(&root, Some(yesterday));
    write_user_pki(&paths, &root.pem, &cert_pem, &key_pem);

    let err = ensure(&spec).unwrap_err();

    assert!(matches!(err, CertError::Expired { .. }), "{err:?}");
    assert!(one_line(&err).contains(&paths.server_cert().display().to_string()));
}

#[test]
fn incomplete_user_managed_pki_names_the_missing_file() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    let paths = Paths::new(&spec.dir);
    let root = foreign_ca("corp root", None);
    let (_, cert_pem) = foreign_leaf(&root, None);
    fs::create_dir_all(paths.server_dir()).unwrap();
    fs::write(paths.server_ca(), &root.pem).unwrap();
    fs::write(paths.server_cert(), cert_pem).unwrap();
    let before = snapshot(&spec.dir);

    let err = ensure(&spec).unwrap_err();

    assert!(
        matches!(&err, CertError::Missing { path, .. } if *path == paths.server_key()),
        "{err:?}"
    );
    one_line(&err);
    assert_eq!(snapshot(&spec.dir), before);
}

#[test]
fn corrupt_ca_key_names_the_file_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    let paths = Paths::new(&spec.dir);
    ensure(&spec).unwrap();
    fs::write(
        paths.ca_key(),
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    // Something must be due, or a lazy implementation could pass by not looking.
    fs::remove_file(paths.server_cert()).unwrap();
    let before = snapshot(&spec.dir);

    let err = ensure(&spec).unwrap_err();

    assert!(
        matches!(&err, CertError::Malformed { path, .. } if *path == paths.ca_key()),
        "{err:?}"
    );
    let msg = one_line(&err);
    assert!(
        msg.starts_with(&format!(
            "{} is not a valid PEM private key: ",
            paths.ca_key().display()
        )),
        "{msg}"
    );
    assert_eq!(snapshot(&spec.dir), before);
    assert!(temporaries(&spec.dir).is_empty());

    // Garbage that is not PEM at all fails the same way.
    fs::write(paths.ca_key(), b"\x00\xffgarbage").unwrap();
    assert!(matches!(
        ensure(&spec).unwrap_err(),
        CertError::Malformed { .. }
    ));
}

#[test]
fn corrupt_server_cert_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    let paths = Paths::new(&spec.dir);
    ensure(&spec).unwrap();
    fs::write(
        paths.server_cert(),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let before = snapshot(&spec.dir);

    let err = ensure(&spec).unwrap_err();

    let msg = one_line(&err);
    assert!(
        msg.starts_with(&format!(
            "{} is not a valid PEM certificate",
            paths.server_cert().display()
        )),
        "{msg}"
    );
    assert_eq!(snapshot(&spec.dir), before);
}

#[test]
fn managed_leaf_signed_by_a_foreign_ca_is_an_error_not_a_silent_reissue() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    let paths = Paths::new(&spec.dir);
    ensure(&spec).unwrap();
    // A certificate for the right key, signed by someone else.
    let foreign = foreign_ca("someone else", None);
    let server_key = key(&paths.server_key());
    let cert = CertificateParams::new(vec!["docker".to_owned()])
        .unwrap()
        .signed_by(&server_key, &foreign.issuer)
        .unwrap();
    fs::write(paths.server_cert(), cert.pem()).unwrap();
    let before = snapshot(&spec.dir);

    let err = ensure(&spec).unwrap_err();

    assert!(matches!(err, CertError::NotSignedBy { .. }), "{err:?}");
    assert_eq!(
        one_line(&err),
        format!(
            "certificate {} is not signed by {}: remove {} to have it re-issued, or fix your PKI",
            paths.server_cert().display(),
            paths.ca_cert().display(),
            paths.server_dir().display()
        )
    );
    assert_eq!(snapshot(&spec.dir), before);
}

#[test]
fn managed_ca_cert_for_another_key_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    let paths = Paths::new(&spec.dir);
    ensure(&spec).unwrap();
    fs::write(paths.ca_cert(), foreign_ca("other", None).pem).unwrap();

    let err = ensure(&spec).unwrap_err();

    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err:?}");
    assert!(one_line(&err).contains(&paths.ca_key().display().to_string()));
}

#[test]
fn openssl_pkcs1_and_sec1_keys_are_kept_and_used() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    let paths = Paths::new(&spec.dir);
    // As a docker:dind volume made with OpenSSL 1.1 plus a hand-made server key.
    fs::create_dir_all(paths.ca_dir()).unwrap();
    fs::create_dir_all(paths.server_dir()).unwrap();
    fs::write(paths.ca_key(), PKCS1_RSA_KEY).unwrap();
    fs::write(paths.server_key(), SEC1_P256_KEY).unwrap();

    let report = ensure(&spec).unwrap();

    assert_eq!(
        (report.ca, report.server, report.client),
        (
            Action::Reissued("missing"),
            Action::Reissued("CA re-issued"),
            Action::Minted
        )
    );
    assert_eq!(fs::read_to_string(paths.ca_key()).unwrap(), PKCS1_RSA_KEY);
    assert_eq!(
        fs::read_to_string(paths.server_key()).unwrap(),
        SEC1_P256_KEY
    );
    assert_chain(&paths.ca_cert(), &paths.ca_key(), &paths.ca_cert());
    assert_leaves_chain(&paths);
    assert_eq!(ensure(&spec).unwrap().server, Action::Reused);
}

#[test]
fn encrypted_keys_are_rejected_by_name() {
    let err = parse_key_pem(
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap_err();
    assert!(matches!(err, Malformed::Encrypted), "{err:?}");
}

#[test]
fn rsa_2048_mints_a_working_set() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = spec(tmp.path());
    spec.key_type = KeyType::Rsa2048;
    let paths = Paths::new(&spec.dir);

    let report = ensure(&spec).unwrap();

    assert_eq!(report.server, Action::Minted);
    for key_path in [paths.ca_key(), paths.server_key(), paths.client_key()] {
        let key = key(&key_path);
        assert!(is_rsa(&key), "{} is not RSA", key_path.display());
        // 2048-bit modulus: the DER RSAPublicKey is 270 bytes.
        assert_eq!(key.der_bytes().len(), 270);
    }
    assert_leaves_chain(&paths);
    let server_der = ders(&paths.server_cert()).remove(0);
    let server = parse_x509(&server_der).unwrap();
    assert!(server
        .key_usage()
        .unwrap()
        .unwrap()
        .value
        .key_encipherment());
    assert_eq!(ensure(&spec).unwrap().server, Action::Reused);
}

#[test]
fn concurrent_ensure_on_one_empty_dir_mints_one_ca() {
    use std::sync::Barrier;

    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    let barrier = Barrier::new(4);

    let reports: Vec<Report> = thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    ensure(&spec).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let fingerprints: BTreeSet<_> = reports
        .iter()
        .map(|r| &r.ca_cert.sha256_fingerprint)
        .collect();
    assert_eq!(fingerprints.len(), 1, "{reports:#?}");
    assert_eq!(reports.iter().filter(|r| r.ca == Action::Minted).count(), 1);
    assert_eq!(
        reports
            .iter()
            .filter(
                |r| (r.ca, r.server, r.client) == (Action::Reused, Action::Reused, Action::Reused)
            )
            .count(),
        3
    );
    assert!(temporaries(&spec.dir).is_empty());
}

/// A job container polling client/ while the supervisor re-issues it,
/// including across a CA change (which changes ca.pem and cert.pem) and a
/// lost client key (which changes key.pem and cert.pem), must never read a
/// set whose key, cert and CA disagree.
#[test]
fn client_set_is_never_seen_mismatched_during_reissues() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    let paths = Paths::new(&spec.dir);
    ensure(&spec).unwrap();
    let stop = AtomicBool::new(false);
    let checked = AtomicUsize::new(0);

    thread::scope(|s| {
        let reader = s.spawn(|| {
            let identity = |m: &fs::Metadata| (m.ino(), m.ctime(), m.ctime_nsec());
            while !stop.load(Ordering::Relaxed) {
                // The reader protocol from the module docs: key.pem is the
                // commit marker and must be the same file before and after.
                let Ok(before) = fs::metadata(paths.client_key()) else {
                    continue;
                };
                let (Ok(ca), Ok(cert), Ok(key_pem)) = (
                    fs::read(paths.client_ca()),
                    fs::read(paths.client_cert()),
                    fs::read(paths.client_key()),
                ) else {
                    continue;
                };
                let Ok(after) = fs::metadata(paths.client_key()) else {
                    continue;
                };
                if identity(&before) != identity(&after) {
                    continue;
                }
                let ca = parse_cert_pem(&ca).expect("client/ca.pem is always complete");
                let cert = parse_cert_pem(&cert).expect("client/cert.pem is always complete");
                let key = parse_key_pem(&key_pem).expect("client/key.pem is always complete");
                let ca = parse_x509(&ca[0]).unwrap();
                let cert = parse_x509(&cert[0]).unwrap();
                assert!(key_matches(&key, &cert), "client key and cert disagree");
                assert!(
                    signed_by(&cert, &ca),
                    "client cert not signed by client/ca.pem"
                );
                checked.fetch_add(1, Ordering::Relaxed);
            }
        });
        for i in 0..40 {
            if i % 2 == 0 {
                // A new CA: ca.pem and cert.pem change, the client key stays.
                fs::remove_dir_all(paths.ca_dir()).unwrap();
                fs::remove_dir_all(paths.server_dir()).unwrap();
            } else {
                // A lost client key: key.pem and cert.pem change.
                fs::remove_file(paths.client_key()).unwrap();
            }
            let report = ensure(&spec).unwrap();
            assert_ne!(report.client, Action::Reused);
            thread::sleep(Duration::from_millis(2));
        }
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap();
    });

    assert!(
        checked.load(Ordering::Relaxed) > 0,
        "the reader never saw a complete set"
    );
}

/// A read-only bind mount of `src` at `dst`, undone on drop. Needs root,
/// which the test suite runs as; without it the test fails saying so.
struct ReadOnlyBind(PathBuf);

impl ReadOnlyBind {
    fn new(src: &Path, dst: &Path) -> Self {
        use nix::mount::{mount, MsFlags};
        let none = None::<&str>;
        fs::create_dir_all(dst).unwrap();
        mount(Some(src), dst, none, MsFlags::MS_BIND, none)
            .unwrap_or_else(|e| panic!("bind mount needs root (CAP_SYS_ADMIN): {e}"));
        let guard = ReadOnlyBind(dst.to_owned());
        let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount(none, dst, none, ro, none)
            .unwrap_or_else(|e| panic!("read-only remount needs root (CAP_SYS_ADMIN): {e}"));
        guard
    }
}

impl Drop for ReadOnlyBind {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn read_only_volume_works_until_something_is_due_then_fails_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let rw = spec(&tmp.path().join("rw"));
    let ro = CertSpec {
        dir: tmp.path().join("ro"),
        ..rw.clone()
    };
    ensure(&rw).unwrap();
    let _mount = ReadOnlyBind::new(&rw.dir, &ro.dir);

    // Locking the directory needs no write, so a valid set is usable.
    let report = ensure(&ro).unwrap();
    assert_eq!(
        (report.ca, report.server, report.client),
        (Action::Reused, Action::Reused, Action::Reused)
    );

    fs::remove_file(Paths::new(&rw.dir).server_cert()).unwrap();
    let before = snapshot(&rw.dir);
    let err = ensure(&ro).unwrap_err();

    let ro_paths = Paths::new(&ro.dir);
    assert!(
        matches!(&err, CertError::Write { path, source } if *path == ro_paths.server_cert()
            && source.raw_os_error() == Some(Errno::EROFS as i32)),
        "{err:?}"
    );
    let msg = one_line(&err);
    assert!(msg.contains("read-only"), "{msg}");
    assert_eq!(snapshot(&rw.dir), before);
    assert!(temporaries(&rw.dir).is_empty());
}

#[test]
fn empty_read_only_volume_is_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("empty");
    fs::create_dir(&src).unwrap();
    let spec = spec(&tmp.path().join("ro"));
    let _mount = ReadOnlyBind::new(&src, &spec.dir);

    let err = ensure(&spec).unwrap_err();

    assert!(matches!(err, CertError::CreateDir { .. }), "{err:?}");
    assert!(one_line(&err).contains(&spec.dir.join("ca").display().to_string()));
    assert!(snapshot(&src).is_empty());
}

#[test]
fn user_managed_pki_on_a_read_only_volume_is_used() {
    let tmp = tempfile::tempdir().unwrap();
    let rw = Paths::new(tmp.path().join("rw"));
    let root = foreign_ca("corp root", None);
    let (key_pem, cert_pem) = foreign_leaf(&root, None);
    write_user_pki(&rw, &root.pem, &cert_pem, &key_pem);
    let spec = spec(&tmp.path().join("ro"));
    let _mount = ReadOnlyBind::new(rw.dir(), &spec.dir);

    assert_eq!(ensure(&spec).unwrap().server, Action::UserManaged);
}

#[test]
fn target_under_a_regular_file_is_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    fs::write(&file, "x").unwrap();
    let spec = CertSpec {
        dir: file.join("certs"),
        ..spec(tmp.path())
    };

    let err = ensure(&spec).unwrap_err();

    assert!(matches!(err, CertError::CreateDir { .. }), "{err:?}");
    assert!(one_line(&err).contains(&spec.dir.display().to_string()));
    assert_eq!(fs::read(&file).unwrap(), b"x");
    assert_eq!(snapshot(tmp.path()).len(), 1);
}

#[test]
fn failed_write_removes_its_temporaries_and_installs_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(tmp.path());
    let paths = Paths::new(&spec.dir);
    // A directory where the client key's temporary file must go, the last
    // one written: every write before it succeeds, that one fails.
    let blocker = paths
        .client_dir()
        .join(format!(".key.pem.tmp-{}", std::process::id()));
    fs::create_dir_all(&blocker).unwrap();

    let err = ensure(&spec).unwrap_err();

    assert!(
        matches!(&err, CertError::Write { path, .. } if *path == paths.client_key()),
        "{err:?}"
    );
    assert!(one_line(&err).contains(&paths.client_key().display().to_string()));
    assert_eq!(temporaries(&spec.dir), std::slice::from_ref(&blocker));
    let files: Vec<_> = snapshot(&spec.dir)
        .into_keys()
        .filter(|p| p.is_file())
        .collect();
    assert!(files.is_empty(), "installed despite the failure: {files:?}");

    fs::remove_dir(&blocker).unwrap();
    let report = ensure(&spec).unwrap();
    assert_eq!(
        (report.ca, report.server, report.client),
        (Action::Minted, Action::Minted, Action::Minted)
    );
    assert_chain(
        &paths.client_cert(),
        &paths.client_key(),
        &paths.client_ca(),
    );
}

#[test]
fn parse_openssl_sans_accepts_the_docker_dind_syntax() {
    assert_eq!(
        parse_openssl_sans("DNS:dind,IP:10.0.0.5").unwrap(),
        [
            San::Dns("dind".into()),
            San::Ip("10.0.0.5".parse().unwrap())
        ]
    );
    assert_eq!(
        parse_openssl_sans(" dns:Build.Example.COM  ip:::1,,IP:[fd00::1]\tDns:*.svc.local ")
            .unwrap(),
        [
            San::Dns("build.example.com".into()),
            San::Ip("::1".parse().unwrap()),
            San::Ip("fd00::1".parse().unwrap()),
            San::Dns("*.svc.local".into()),
        ]
    );
    assert_eq!(parse_openssl_sans("").unwrap(), []);
    assert_eq!(parse_openssl_sans(" , ").unwrap(), []);
    assert_eq!(San::Ip("::1".parse().unwrap()).to_string(), "IP:::1");
    assert_eq!(San::Dns("dind".into()).to_string(), "DNS:dind");
}

#[test]
fn parse_openssl_sans_names_the_bad_entry() {
    for (input, bad) in [
        ("DNS:ok,dind", "dind"),
        ("URI:http://x", "URI:http://x"),
        ("email:a@b", "email:a@b"),
        ("IP:300.1.1.1", "IP:300.1.1.1"),
        ("IP:dind", "IP:dind"),
        ("DNS:", "DNS:"),
        ("DNS:-bad.example", "DNS:-bad.example"),
        ("DNS:a..b", "DNS:a..b"),
        ("DNS:caf\u{e9}.example", "DNS:caf\u{e9}.example"),
    ] {
        let err = parse_openssl_sans(input).unwrap_err();
        assert!(
            matches!(&err, CertError::BadSan { entry, .. } if entry == bad),
            "{input}: {err:?}"
        );
        let msg = one_line(&err);
        assert!(
            msg.contains(&format!("{bad:?}")) && msg.contains(DOCKER_TLS_SAN),
            "{msg}"
        );
    }
}

#[test]
fn fqdn_comes_from_the_first_hosts_line_naming_the_hostname() {
    let hosts = "# comment testhost.wrong\n\
                 127.0.0.1\tlocalhost\n\
                 10.0.0.2 node7.ci.example.com node7 # the container\n\
                 10.0.0.3 node7.other.example node7\n";
    assert_eq!(
        fqdn_from_hosts(hosts, "node7").as_deref(),
        Some("node7.ci.example.com")
    );
    assert_eq!(
        fqdn_from_hosts(hosts, "NODE7").as_deref(),
        Some("node7.ci.example.com")
    );
    assert_eq!(fqdn_from_hosts(hosts, "testhost"), None);
    // docker's own /etc/hosts: the canonical name is the bare hostname.
    assert_eq!(fqdn_from_hosts("172.17.0.3\tabc123\n", "abc123"), None);
    assert_eq!(fqdn_from_hosts("", "abc123"), None);
}

#[test]
fn assembled_sans_are_sorted_deduplicated_and_skip_link_local() {
    let sans = assemble_sans(
        Some("Host_1"),
        "",
        ["127.0.0.1".parse().unwrap(), "fe80::42".parse().unwrap()],
        &[San::Dns("DOCKER".into())],
    );
    assert_eq!(
        sans.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "DNS:docker",
            "DNS:host_1",
            "DNS:localhost",
            "IP:127.0.0.1",
            "IP:::1"
        ]
    );
    // An unusable hostname is left out rather than failing the bootstrap.
    assert!(!assemble_sans(Some("bad host"), "", [], &[])
        .iter()
        .any(|s| s.to_string().contains("bad")));
}

#[test]
fn default_sans_on_this_machine_cover_the_loopbacks_and_hostname() {
    let extra = San::Dns("extra.example".into());
    let sans = default_sans(std::slice::from_ref(&extra));
    for want in [
        San::Dns("docker".into()),
        San::Dns("localhost".into()),
        San::Ip(Ipv4Addr::LOCALHOST.into()),
        San::Ip(Ipv6Addr::LOCALHOST.into()),
        extra,
    ] {
        assert!(sans.contains(&want), "{want} missing from {sans:?}");
    }
    let hostname = nix::unistd::gethostname().unwrap().into_string().unwrap();
    if is_dns_name(&hostname) {
        assert!(sans.contains(&San::Dns(hostname.to_ascii_lowercase())));
    }
    assert!(
        sans.windows(2).all(|w| w[0] < w[1]),
        "not sorted and unique: {sans:?}"
    );
}

#[test]
fn out_of_range_validity_is_an_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = spec(tmp.path());
    spec.validity = Duration::from_secs(u64::MAX);
    let err = ensure(&spec).unwrap_err();
    assert!(matches!(err, CertError::BadValidity { .. }), "{err:?}");
    assert!(temporaries(&spec.dir).is_empty());
}
