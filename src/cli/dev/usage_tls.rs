//! The usage API's serving certificate in `keysmith dev`: made at start, like the chart's
//! (a CA of its own, the name `<service>.<namespace>.svc` the aggregator checks), and written
//! where the verifier reads certificates from, files: a private temporary directory, removed
//! when dev stops.

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use keysmith_emulator::Certificate;

use crate::verifier::tls::TlsFiles;

/// The directory holding the certificate and its key.
pub struct UsageTls {
    dir: PathBuf,
}

impl UsageTls {
    /// Write `certificate` into a fresh directory only this user can read.
    pub fn write(certificate: &Certificate) -> Result<(UsageTls, TlsFiles), String> {
        let suffix = &keysmith_emulator::random_token()[..12];
        let dir = std::env::temp_dir().join(format!("keysmith-dev-usage-{suffix}"));
        let failed = |e: std::io::Error| format!("writing the usage API's certificate: {e}");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(failed)?;
        let written = UsageTls { dir };
        let files = TlsFiles {
            cert: written.dir.join("tls.crt"),
            key: written.dir.join("tls.key"),
        };
        std::fs::write(&files.cert, &certificate.cert_pem).map_err(failed)?;
        std::fs::write(&files.key, &certificate.key_pem).map_err(failed)?;
        Ok((written, files))
    }
}

impl Drop for UsageTls {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
