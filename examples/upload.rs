//! Uploads one file to one or more hosts the way `airlock apply` uploads a bundle blob. Each host
//! gets one SSH connection. The bytes go to a temporary name, are hashed on the host as they
//! arrive (or after the transfer where the host has no python3), are checked against SHA256 and
//! are renamed into place. The digest is an argument, as bundle.yaml gives it to apply, so the
//! file is read once.
//!
//! Used by `scripts/bench` to compare airlock's uploads with OpenSSH's. The script times the
//! whole process, connecting included, as it times `ssh`.
//!
//! Usage: upload FILE SHA256 DEST KNOWN_HOSTS KEY USER@ADDRESS...

use std::path::PathBuf;

use airlock::digest::Digest;
use airlock::remote::stream::async_reader;
use airlock::remote::{
    ConnectOptions, Host, HostKeyPolicy, KnownHosts, Placement, Session, SshTarget,
};
use airlock::ui::Ui;
use anyhow::{Context, bail};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 6 {
        bail!("missing arguments; usage: upload FILE SHA256 DEST KNOWN_HOSTS KEY USER@ADDRESS...");
    }
    let file = PathBuf::from(&args[0]);
    let expected = Digest::from_hex(&args[1])
        .with_context(|| format!("invalid SHA256 {:?}: expected 64 hex digits", args[1]))?;
    let dest = args[2].clone();
    let known_hosts = KnownHosts::load(&PathBuf::from(&args[3]))?;
    let key = PathBuf::from(&args[4]);
    let policy = HostKeyPolicy::new(known_hosts, false);
    let size = std::fs::metadata(&file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();

    let ui = Ui::hidden();
    let uploads = args[5..].iter().map(|spec| {
        let (file, dest, key, policy, ui) = (&file, &dest, &key, &policy, &ui);
        async move {
            let Some((user, address)) = spec.split_once('@') else {
                bail!("invalid host {spec:?}: expected USER@ADDRESS");
            };
            let target = SshTarget::direct(address, 22, user, Some(key.clone()));
            let session = Session::connect(&target, policy, &ConnectOptions::default()).await?;
            let host = Host::new(session, user != "root");
            let item = ui.item(host.label(), Some(size));
            host.write_verified(
                Placement::new(dest, "0644"),
                async_reader(std::fs::File::open(file)?),
                size,
                expected,
                Some(&item),
            )
            .await?;
            host.close().await;
            anyhow::Ok(())
        }
    });
    futures::future::try_join_all(uploads).await?;
    Ok(())
}
