use crate::ParseError;
use rand::RngExt;
use std::fmt;

/// A database password we generated: 32 ASCII letters and digits.
///
/// The alphabet is restricted on purpose: MariaDB does not accept placeholders in
/// `IDENTIFIED BY`, so the password is written into SQL as a literal, and this type is
/// what makes that safe. `Debug` and `Display` never show it, so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct DbPassword(String);

const PASSWORD_LEN: usize = 32;
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

impl DbPassword {
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let s = (0..PASSWORD_LEN)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect();
        Self(s)
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.len() == PASSWORD_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseError::new(
                "a database password must be 32 ASCII letters or digits",
            ))
        }
    }

    /// The secret itself. Call sites are few and easy to audit: SQL for the user, the
    /// settings file, and stdin of a platform action.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DbPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DbPassword(***)")
    }
}

impl serde::Serialize for DbPassword {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for DbPassword {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_parse_and_differ() {
        let a = DbPassword::generate();
        let b = DbPassword::generate();
        assert!(DbPassword::parse(a.expose()).is_ok());
        assert_ne!(a, b);
    }

    #[test]
    fn debug_hides_the_secret() {
        let p = DbPassword::generate();
        assert!(!format!("{p:?}").contains(p.expose()));
    }

    #[test]
    fn quotes_are_refused() {
        assert!(DbPassword::parse("abc'def").is_err());
    }
}
