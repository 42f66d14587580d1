//! A dropped connection is re-opened. Restarts the shared test DC, so it lives in a test binary
//! of its own (cargo runs test binaries one after another).

use shadowsync_directory::LdapDirectory;
use shadowsync_e2e::{repo_root, samba};

fn dc(command: &str) {
    let status = std::process::Command::new("bash")
        .arg(repo_root().join("tests/samba/samba-dc.sh"))
        .arg(command)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "samba-dc.sh {command}");
}

#[tokio::test]
async fn reconnects_after_the_server_restarts() {
    let s = samba();
    let d = LdapDirectory::connect(s.directory_config(), &s.policy())
        .await
        .unwrap();
    assert!(d
        .find_by_sam_account_name("Administrator")
        .await
        .unwrap()
        .is_some());

    dc("stop");
    let err = d
        .find_by_sam_account_name("Administrator")
        .await
        .unwrap_err();
    assert!(
        err.is_retryable(),
        "a DC that is down is worth retrying: {err:?}"
    );

    dc("start");
    assert!(
        d.find_by_sam_account_name("Administrator")
            .await
            .unwrap()
            .is_some(),
        "the same Directory works again after the DC came back"
    );
}
