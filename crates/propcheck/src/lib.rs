//! Seeded generators for property tests: every run draws the same inputs from the same seed,
//! so a failure can be replayed, and the inputs lean to what breaks parsers (boundaries,
//! multi-byte characters, control characters, huge numbers, deep nesting, near-valid text).

/// xorshift64*: small, fast, good enough to spread inputs.
pub struct Gen(u64);

impl Gen {
    pub fn new(seed: u64) -> Self {
        Gen(seed.max(1))
    }

    pub fn u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.u64() % n.max(1) as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A character from a mix that parsers meet: ASCII letters and digits, separators,
    /// control characters, multi-byte letters, combining marks, emoji, bidi controls.
    pub fn char(&mut self) -> char {
        const SPECIAL: &[char] = &[
            '.', '-', '_', '/', '\\', ':', ';', ',', '@', '%', '+', '*', '?', '"', '\'', '`', ' ',
            '\t', '\n', '\r', '\0', '\u{7f}', 'é', 'ß', 'ü', 'Ω', 'ж', '中', '\u{301}', '\u{202e}',
            '\u{200b}', '🦀', '\u{fffd}', '[', ']', '{', '}', '<', '>', '$', '(', ')', '#', '&',
            '=', '!', '~', '^', '|',
        ];
        match self.below(4) {
            0 => (b'a' + self.below(26) as u8) as char,
            1 => (b'0' + self.below(10) as u8) as char,
            2 => *self.pick(SPECIAL),
            _ => char::from_u32(self.below(0x3000) as u32).unwrap_or('x'),
        }
    }

    pub fn string(&mut self, max: usize) -> String {
        let len = match self.below(10) {
            0 => 0,
            1 => max,
            _ => self.below(max + 1),
        };
        (0..len).map(|_| self.char()).collect()
    }

    /// `base` with a few characters inserted, removed or replaced.
    pub fn mutate(&mut self, base: &str) -> String {
        let mut chars: Vec<char> = base.chars().collect();
        for _ in 0..=self.below(3) {
            let at = self.below(chars.len() + 1);
            match self.below(3) {
                0 => chars.insert(at, self.char()),
                1 if at < chars.len() => {
                    chars.remove(at);
                }
                _ if at < chars.len() => chars[at] = self.char(),
                _ => chars.push(self.char()),
            }
        }
        chars.into_iter().collect()
    }

    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len).map(|_| self.u64() as u8).collect()
    }

    /// A JSON value of any type, boundary numbers included, at most `depth` deep.
    pub fn json(&mut self, depth: usize) -> serde_json::Value {
        use serde_json::json;
        match self.below(if depth == 0 { 6 } else { 8 }) {
            0 => json!(null),
            1 => json!(self.below(2) == 0),
            2 => self
                .pick(&[
                    json!(0),
                    json!(-1),
                    json!(1),
                    json!(i64::MAX),
                    json!(i64::MIN),
                    json!(u64::MAX),
                    json!(1e308),
                    json!(-1e308),
                    json!(0.5),
                    json!(3600),
                ])
                .clone(),
            3 => json!(self.string(12)),
            4 => json!(self
                .pick(&[
                    "hourly",
                    "daily",
                    "weekly",
                    "1h",
                    "90m",
                    "2d",
                    "1w",
                    "0s",
                    "9223372036854775807w",
                    "1000000w",
                    "é",
                    "1é",
                    "-5m",
                    "m"
                ])
                .to_string()),
            5 => json!(format!(
                "{}{}",
                self.u64() % 100_000,
                self.pick(&["s", "m", "h", "d", "w", "x", "é", ""])
            )),
            6 => {
                serde_json::Value::Array((0..self.below(4)).map(|_| self.json(depth - 1)).collect())
            }
            _ => {
                let keys = [
                    "interval",
                    "window",
                    "jitter",
                    "keep_newest",
                    "rules",
                    "older_than",
                    "keep_one_per",
                    "x",
                ];
                serde_json::Value::Object(
                    (0..self.below(4))
                        .map(|_| (self.pick(&keys).to_string(), self.json(depth - 1)))
                        .collect(),
                )
            }
        }
    }
}
