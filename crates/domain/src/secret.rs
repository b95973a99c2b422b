use crate::ParseError;
use rand::RngExt;
use std::fmt;

/// A secret we generate: 32 ASCII letters and digits (about 190 bits).
///
/// The alphabet is restricted on purpose: MariaDB does not accept placeholders in
/// `IDENTIFIED BY`, so a password is written into SQL as a literal, and settings files quote
/// these values; this type is what makes both safe. `Debug` and `Display` never show it, so
/// it cannot leak into logs.
macro_rules! secret_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            pub fn generate() -> Self {
                let mut rng = rand::rng();
                let s = (0..SECRET_LEN)
                    .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
                    .collect();
                Self(s)
            }

            pub fn parse(s: &str) -> Result<Self, ParseError> {
                if s.len() == SECRET_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(ParseError::new(concat!(
                        $what,
                        " must be 32 ASCII letters or digits"
                    )))
                }
            }

            /// The secret itself. Call sites are few and easy to audit.
            pub fn expose(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(***)"))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

const SECRET_LEN: usize = 32;
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

secret_type!(
    /// A site database's password. Call sites of `expose` are SQL for the user, the settings
    /// file, and stdin of a platform action.
    DbPassword,
    "a database password"
);

secret_type!(
    /// A site's own application secret, made once at install and kept for the site's life:
    /// the keys and salts its settings derive from it (WordPress's keys, Drupal's hash salt)
    /// stay the same through restore, migrate, rename and clone, so nobody is logged out.
    AppSecret,
    "an application secret"
);

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
