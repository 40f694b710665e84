//! Hands a peer the SRTP keying material its DTLS handshake exported (RFC 5764 §4.2), so the
//! peer can seal its video packets itself ([`crate::srtp`]) while str0m keeps ICE, DTLS, RTCP,
//! audio and the data channel.
//!
//! str0m's crypto provider has no per-session hook, so this wraps its DTLS provider: every DTLS
//! instance made while [`capture`] runs on the thread (str0m makes it inside `RtcConfig::build`)
//! reports its keying material, profile and role into the [`KeySlot`] given there.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use str0m::crypto::dtls::{DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion};
use str0m::crypto::{CryptoError, CryptoProvider};

use crate::srtp::MasterKey;

/// Where a session's sending key lands once its DTLS handshake is done.
pub type KeySlot = Arc<Mutex<Option<MasterKey>>>;

thread_local! {
    /// The slot of the session being built on this thread.
    static BUILDING: RefCell<Option<KeySlot>> = const { RefCell::new(None) };
}

/// The crypto provider whose DTLS instances report their keys (str0m's default otherwise).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let inner = str0m::crypto::from_feature_flags();
            let tap: &'static TapProvider = Box::leak(Box::new(TapProvider { inner: inner.dtls_provider }));
            Arc::new(CryptoProvider { dtls_provider: tap, ..inner })
        })
        .clone()
}

/// Runs `build` (which makes one `Rtc` with [`provider`]) so that the DTLS instance it creates
/// reports into `slot`.
pub fn capture<T>(slot: &KeySlot, build: impl FnOnce() -> T) -> T {
    BUILDING.with(|b| *b.borrow_mut() = Some(slot.clone()));
    let built = build();
    BUILDING.with(|b| *b.borrow_mut() = None);
    built
}

#[derive(Debug)]
struct TapProvider {
    inner: &'static dyn DtlsProvider,
}

impl DtlsProvider for TapProvider {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        self.inner.generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let inner = self.inner.new_dtls(cert, now, version, mtu)?;
        match BUILDING.with(|b| b.borrow().clone()) {
            Some(slot) => Ok(Box::new(TapInstance { inner, slot, active: false })),
            None => Ok(inner),
        }
    }

    fn is_test(&self) -> bool {
        self.inner.is_test()
    }
}

struct TapInstance {
    inner: Box<dyn DtlsInstance>,
    slot: KeySlot,
    active: bool,
}

impl std::fmt::Debug for TapInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapInstance").field("active", &self.active).finish_non_exhaustive()
    }
}

impl DtlsInstance for TapInstance {
    fn set_active(&mut self, active: bool) {
        self.active = active;
        self.inner.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.inner.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let output = self.inner.poll_output(buf);
        if let DtlsOutput::KeyingMaterial(material, profile) = &output {
            let key = MasterKey::sending_half(material, *profile, self.active);
            if let Ok(mut slot) = self.slot.lock() {
                *slot = key;
            }
        }
        output
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.inner.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.inner.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.inner.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.inner.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.inner.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.inner.close()
    }
}
