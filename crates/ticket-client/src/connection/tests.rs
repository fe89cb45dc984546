use super::*;

fn url(text: &str) -> NatsUrl {
    text.parse().unwrap()
}

#[test]
fn credentials_come_out_of_the_urls_and_never_show() {
    let parsed = url("nats://ticketd:s3cret%40x@nats-1:4222, nats://ticketd:s3cret%40x@nats-2:4222");
    assert_eq!(parsed.to_string(), "nats://ticketd:***@nats-1:4222,nats://ticketd:***@nats-2:4222");
    assert!(!format!("{parsed:?}").contains("s3cret"));
    assert_eq!(parsed.login, Some(Login::UserPassword { user: "ticketd".into(), password: Secret::new("s3cret@x") }));
    // The servers async-nats is given carry no credentials.
    assert!(parsed.servers().iter().all(|s| s.username().is_none() && s.password().is_none()));
    assert_eq!(parsed.servers().len(), 2);

    let token = url("nats://t0ken@127.0.0.1:4222");
    assert_eq!(token.to_string(), "nats://***@127.0.0.1:4222");
    assert_eq!(token.login, Some(Login::Token(Secret::new("t0ken"))));
    let plain = url("127.0.0.1:4222");
    assert!(!plain.has_credentials());
    assert_eq!(plain.to_string(), "nats://127.0.0.1:4222");
}

#[test]
fn bad_urls_are_refused_without_showing_them() {
    let err = |text: &str| text.parse::<NatsUrl>().unwrap_err();
    assert!(matches!(err("nats://a:one@h:1,nats://a:two@h:2"), ConnectionError::DifferentCredentials));
    assert!(matches!(err(" , "), ConnectionError::NoServer));
    let bad = err("http://u:hidden@h:1");
    assert!(matches!(bad, ConnectionError::InvalidUrl { position: 1, .. }));
    assert!(!bad.to_string().contains("hidden"), "{bad}");
    assert!(matches!(err("nats://u:%zz@h:1"), ConnectionError::InvalidUrl { .. }));
    // A server without credentials beside one with them logs in the same way.
    assert!(url("nats://a:pw@h:1,nats://h:2").has_credentials());
}

#[test]
fn secrets_never_show_in_debug() {
    let credentials = Credentials {
        user: Some("ticketd".into()),
        password: Some(Secret::new("pa55")),
        token: Some(Secret::new("t0k")),
        ..Credentials::default()
    };
    let shown = format!("{credentials:?}");
    assert!(!shown.contains("pa55") && !shown.contains("t0k") && shown.contains("ticketd"), "{shown}");
}

#[tokio::test]
async fn one_way_to_log_in() {
    let with_password = Credentials { password: Some(Secret::new("pw")), ..Credentials::default() };
    let in_url = url("nats://a:pw@h:1");
    let conflict = login(&in_url, &with_password, ConnectOptions::new()).await.err().unwrap();
    assert!(matches!(conflict, ConnectionError::Conflicting("credentials in the url", "a user and password")));
    let incomplete = login(&url("h:1"), &with_password, ConnectOptions::new()).await.err().unwrap();
    assert!(matches!(incomplete, ConnectionError::Incomplete));
    let (_, kind) = login(&in_url, &Credentials::default(), ConnectOptions::new()).await.unwrap();
    assert_eq!(kind, LoginKind::User("a".into()));
    let token = Credentials { token: Some(Secret::new("t")), ..Credentials::default() };
    let (_, kind) = login(&url("h:1"), &token, ConnectOptions::new()).await.unwrap();
    assert_eq!(kind, LoginKind::Token);
}

#[tokio::test]
async fn an_nkey_seed_file_is_checked_and_names_its_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let pair = nkeys::KeyPair::new_user();
    let file = dir.path().join("user.nk");
    std::fs::write(&file, format!("# a user seed\n{}\n", pair.seed().unwrap())).unwrap();
    let credentials = Credentials { nkey_seed_file: Some(file.clone()), ..Credentials::default() };
    let (_, kind) = login(&url("h:1"), &credentials, ConnectOptions::new()).await.unwrap();
    assert_eq!(kind, LoginKind::NKey(pair.public_key()));

    std::fs::write(&file, "not a seed\n").unwrap();
    let refused = login(&url("h:1"), &credentials, ConnectOptions::new()).await.err().unwrap();
    assert!(matches!(refused, ConnectionError::InvalidSeed { .. }));
    let missing = Credentials { nkey_seed_file: Some(dir.path().join("none")), ..Credentials::default() };
    let refused = login(&url("h:1"), &missing, ConnectOptions::new()).await.err().unwrap();
    assert!(matches!(refused, ConnectionError::SeedFile { .. }));
}
