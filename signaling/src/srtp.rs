//! SRTP for the video packets a peer sends itself (see [`crate::peer::PeerConfig::direct_video`]):
//! the session keys are derived from the DTLS-SRTP master key and salt (RFC 5764 §4.2, the KDF of
//! RFC 3711 §4.3.1 with AES-CM as its PRF) and each packet is sealed with AES-GCM (RFC 7714 §8:
//! the RTP header is the associated data, payload and 16-byte tag follow it).
//!
//! Only the AEAD profiles are here (`SRTP_AEAD_AES_128_GCM`, `SRTP_AEAD_AES_256_GCM`): Chromium,
//! Firefox, Safari and str0m negotiate one of them with str0m's DTLS, which prefers them. A
//! session that negotiates `SRTP_AES128_CM_HMAC_SHA1_80` keeps str0m's own send path.
//!
//! The ciphers are str0m's crypto provider's (aws-lc here), so this module adds no primitive of
//! its own, only the key schedule and the packet layout.

use str0m::crypto::dtls::SrtpProfile;
use str0m::crypto::{AeadAes128GcmCipher, AeadAes256GcmCipher, CryptoProvider};

/// The SRTP label of the RTP encryption key (RFC 3711 §4.3.2).
const LABEL_RTP_KEY: u8 = 0x00;
/// The SRTP label of the RTP salt (RFC 3711 §4.3.2).
const LABEL_RTP_SALT: u8 = 0x02;
/// AES-GCM authentication tag, bytes (RFC 7714 §14.2: 16 octets for both key sizes).
pub const TAG_LEN: usize = 16;
/// AEAD master and session salt, bytes (RFC 7714 §12).
const SALT_LEN: usize = 12;

/// The sending half of a session's DTLS-SRTP keying material (RFC 5764 §4.2: the client's half
/// when the DTLS role is active, the server's when passive).
#[derive(Clone)]
pub struct MasterKey {
    /// The negotiated protection profile.
    pub profile: SrtpProfile,
    /// Master key: 16 bytes (AES-128) or 32 (AES-256).
    pub key: Vec<u8>,
    /// Master salt: 12 bytes for the AEAD profiles, 14 for AES-CM.
    pub salt: Vec<u8>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material itself.
        f.debug_struct("MasterKey").field("profile", &self.profile).finish_non_exhaustive()
    }
}

impl MasterKey {
    /// Splits DTLS keying material `[client key | server key | client salt | server salt]`
    /// (RFC 5764 §4.2) and keeps the half this side sends with. `None` if its length does not
    /// match the profile.
    pub fn sending_half(material: &[u8], profile: SrtpProfile, active: bool) -> Option<MasterKey> {
        let (key_len, salt_len) = match profile {
            SrtpProfile::AES128_CM_SHA1_80 => (16, 14),
            SrtpProfile::AEAD_AES_128_GCM => (16, SALT_LEN),
            SrtpProfile::AEAD_AES_256_GCM => (32, SALT_LEN),
            _ => return None,
        };
        if material.len() != 2 * (key_len + salt_len) {
            return None;
        }
        let (key_at, salt_at) = if active { (0, 2 * key_len) } else { (key_len, 2 * key_len + salt_len) };
        Some(MasterKey { profile, key: material[key_at..key_at + key_len].to_vec(), salt: material[salt_at..salt_at + salt_len].to_vec() })
    }
}

/// The AES-GCM cipher of one SSRC's sending context.
enum Seal {
    Aes128(Box<dyn AeadAes128GcmCipher>),
    Aes256(Box<dyn AeadAes256GcmCipher>),
}

/// Seals RTP packets of one sending context (RFC 7714). The SRTP packet index is the caller's
/// extended sequence number (ROC << 16 | SEQ, RFC 3711 §3.3.1); the same index must never seal
/// two different packets (resending the same packet under its own index is fine: it produces
/// the same bytes).
pub struct SrtpSender {
    seal: Seal,
    salt: [u8; SALT_LEN],
}

impl std::fmt::Debug for SrtpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bits = match self.seal {
            Seal::Aes128(_) => 128,
            Seal::Aes256(_) => 256,
        };
        f.debug_struct("SrtpSender").field("aes_gcm_bits", &bits).finish_non_exhaustive()
    }
}

impl SrtpSender {
    /// The sending context of `master` (session keys derived, RFC 3711 §4.3.1 with a key
    /// derivation rate of 0). `None` for a profile other than the AEAD ones.
    pub fn new(crypto: &CryptoProvider, master: &MasterKey) -> Option<SrtpSender> {
        let mut salt = [0u8; SALT_LEN];
        derive(crypto, &master.key, &master.salt, LABEL_RTP_SALT, &mut salt);
        match master.profile {
            SrtpProfile::AEAD_AES_128_GCM => {
                let mut key = [0u8; 16];
                derive(crypto, &master.key, &master.salt, LABEL_RTP_KEY, &mut key);
                Some(SrtpSender::with_session_key_128(crypto, key, salt))
            }
            SrtpProfile::AEAD_AES_256_GCM => {
                let mut key = [0u8; 32];
                derive(crypto, &master.key, &master.salt, LABEL_RTP_KEY, &mut key);
                Some(SrtpSender { seal: Seal::Aes256(crypto.srtp_provider.aead_aes_256_gcm().create_cipher(key, true)), salt })
            }
            _ => None,
        }
    }

    /// A context from an AES-128-GCM session key and salt (RFC 7714's test vectors are given so).
    fn with_session_key_128(crypto: &CryptoProvider, key: [u8; 16], salt: [u8; SALT_LEN]) -> SrtpSender {
        SrtpSender { seal: Seal::Aes128(crypto.srtp_provider.aead_aes_128_gcm().create_cipher(key, true)), salt }
    }

    /// Appends the SRTP packet of `header` (a whole RTP header, extensions included, at least
    /// 12 bytes) and `payload` to `out`: header, encrypted payload, 16-byte tag. `index` is the
    /// packet's extended sequence number; its low 16 bits must be the header's sequence number.
    pub fn seal(&mut self, header: &[u8], payload: &[u8], index: u64, out: &mut Vec<u8>) {
        debug_assert!(header.len() >= 12 && u64::from(u16::from_be_bytes([header[2], header[3]])) == index & 0xffff);
        let ssrc = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        // RFC 7714 §8.1: IV = (0x0000 || SSRC || ROC || SEQ) XOR salt.
        let mut iv = [0u8; SALT_LEN];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[6..12].copy_from_slice(&index.to_be_bytes()[2..8]);
        for (b, s) in iv.iter_mut().zip(self.salt) {
            *b ^= s;
        }
        let start = out.len();
        out.extend_from_slice(header);
        out.resize(start + header.len() + payload.len() + TAG_LEN, 0);
        let sealed = &mut out[start + header.len()..];
        // The ciphers fail only on a nonce or buffer of the wrong size, which cannot happen here.
        let result = match &mut self.seal {
            Seal::Aes128(c) => c.encrypt(&iv, header, payload, sealed),
            Seal::Aes256(c) => c.encrypt(&iv, header, payload, sealed),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "SRTP seal failed; packet dropped");
            out.truncate(start);
        }
    }
}

/// RFC 3711 §4.3.1 and §4.3.3 with a key derivation rate of 0: `out` = the AES-CM keystream
/// (AES keyed with the master key, over blocks `(salt XOR label << 48) || counter`) for `label`.
/// A 12-byte AEAD master salt takes the 14-byte salt's place left-aligned, padded with zeros
/// (RFC 7714 §11).
fn derive(crypto: &CryptoProvider, master_key: &[u8], master_salt: &[u8], label: u8, out: &mut [u8]) {
    let mut block = [0u8; 16];
    block[..master_salt.len()].copy_from_slice(master_salt);
    block[7] ^= label;
    // aws-lc's ECB round writes a block plus room for padding.
    let mut keystream = [0u8; 32];
    for (counter, chunk) in out.chunks_mut(16).enumerate() {
        block[14..].copy_from_slice(&(counter as u16).to_be_bytes());
        if master_key.len() == 32 {
            crypto.srtp_provider.srtp_aes_256_ecb_round(master_key, &block, &mut keystream);
        } else {
            crypto.srtp_provider.srtp_aes_128_ecb_round(master_key, &block, &mut keystream);
        }
        chunk.copy_from_slice(&keystream[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn session_keys_follow_rfc_3711_appendix_b3() {
        let crypto = str0m::crypto::from_feature_flags();
        let (master, salt) = (hex("E1F97A0D3E018BE0D64FA32C06DE4139"), hex("0EC675AD498AFEEBB6960B3AABE6"));
        let mut key = [0u8; 16];
        derive(&crypto, &master, &salt, LABEL_RTP_KEY, &mut key);
        assert_eq!(key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut session_salt = [0u8; 14];
        derive(&crypto, &master, &salt, LABEL_RTP_SALT, &mut session_salt);
        assert_eq!(session_salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        // A longer output continues the keystream (the auth key, label 1, is 20 bytes).
        let mut auth = [0u8; 20];
        derive(&crypto, &master, &salt, 0x01, &mut auth);
        assert_eq!(auth.to_vec(), hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4"));
    }

    #[test]
    fn aes_256_packets_open_with_str0ms_cipher() {
        // No published AES-256 SRTP vector: str0m's own provider (its receive path) must open
        // what this side seals, and reject it with one bit of the header changed.
        let crypto = str0m::crypto::from_feature_flags();
        let master = MasterKey { profile: SrtpProfile::AEAD_AES_256_GCM, key: (0u8..32).collect(), salt: (100u8..112).collect() };
        let mut sender = SrtpSender::new(&crypto, &master).unwrap();
        let mut key = [0u8; 32];
        derive(&crypto, &master.key, &master.salt, LABEL_RTP_KEY, &mut key);
        let mut salt = [0u8; SALT_LEN];
        derive(&crypto, &master.key, &master.salt, LABEL_RTP_SALT, &mut salt);
        let header = hex("80601234 00015f90 cafebabe");
        let payload: Vec<u8> = (0..1200u32).map(|i| (i * 7) as u8).collect();
        let mut out = Vec::new();
        sender.seal(&header, &payload, 0x0001_1234, &mut out);
        assert_eq!(out.len(), header.len() + payload.len() + TAG_LEN);
        let mut iv = [0u8; SALT_LEN];
        iv[2..6].copy_from_slice(&0xcafe_babe_u32.to_be_bytes());
        iv[6..12].copy_from_slice(&0x0001_1234_u64.to_be_bytes()[2..8]);
        iv.iter_mut().zip(salt).for_each(|(b, s)| *b ^= s);
        let mut opener = crypto.srtp_provider.aead_aes_256_gcm().create_cipher(key, false);
        let mut plain = vec![0u8; out.len()];
        let n = opener.decrypt(&iv, &[&out[..12]], &out[12..], &mut plain).unwrap();
        assert_eq!(&plain[..n], &payload[..]);
        let mut tampered = out[..12].to_vec();
        tampered[1] ^= 0x80; // the marker bit
        assert!(opener.decrypt(&iv, &[&tampered], &out[12..], &mut plain).is_err());
    }

    #[test]
    fn packets_are_sealed_as_rfc_7714_section_16_1_1() {
        let crypto = str0m::crypto::from_feature_flags();
        let key: [u8; 16] = hex("000102030405060708090a0b0c0d0e0f").try_into().unwrap();
        let salt: [u8; 12] = hex("517569642070726f2071756f").try_into().unwrap();
        let mut sender = SrtpSender::with_session_key_128(&crypto, key, salt);
        let header = hex("8040f17b 8041f8d3 5501a0b2");
        let payload = b"Gallia est omnis divisa in partes tres";
        let mut out = vec![0xaa]; // appended after what is there
        sender.seal(&header, payload, 0xf17b, &mut out);
        let expected = hex("8040f17b8041f8d35501a0b2f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e6f42a5f47a51c7d19b36de3adf8833
             899d7f27beb16a9152cf765ee4390cce");
        assert_eq!(out[0], 0xaa);
        assert_eq!(&out[1..], &expected[..]);
    }

    #[test]
    fn the_sending_half_is_the_servers_when_passive() {
        // 16-byte keys and 12-byte salts: [ck | sk | cs | ss].
        let material: Vec<u8> = [[1u8; 16].as_slice(), &[2; 16], &[3; 12], &[4; 12]].concat();
        let passive = MasterKey::sending_half(&material, SrtpProfile::AEAD_AES_128_GCM, false).unwrap();
        assert_eq!((passive.key, passive.salt), (vec![2; 16], vec![4; 12]));
        let active = MasterKey::sending_half(&material, SrtpProfile::AEAD_AES_128_GCM, true).unwrap();
        assert_eq!((active.key, active.salt), (vec![1; 16], vec![3; 12]));
        assert!(MasterKey::sending_half(&material, SrtpProfile::AEAD_AES_256_GCM, false).is_none(), "wrong length");
        let crypto = str0m::crypto::from_feature_flags();
        let cm = MasterKey { profile: SrtpProfile::AES128_CM_SHA1_80, key: vec![0; 16], salt: vec![0; 14] };
        assert!(SrtpSender::new(&crypto, &cm).is_none(), "AES-CM stays with str0m");
    }
}
