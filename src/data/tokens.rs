//! Counting a report's tokens, for the text encoder's length limit.
//!
//! Privacy Distillation dropped reports whose impression exceeded 76 tokens of
//! the CLIP tokenizer. The importers take any [`TokenCounter`] (a closure
//! `Fn(&str) -> usize` is one), so the real tokenizer plugs in once it exists;
//! until then [`WordPieceEstimate`] stands in.

/// The impression length limit Privacy Distillation used, in tokens.
pub const PAPER_TOKEN_LIMIT: usize = 76;

/// Counts the tokens of a text (without begin/end-of-text markers).
pub trait TokenCounter: Send + Sync {
    fn count_tokens(&self, text: &str) -> usize;
}

impl<F: Fn(&str) -> usize + Send + Sync> TokenCounter for F {
    fn count_tokens(&self, text: &str) -> usize {
        self(text)
    }
}

/// An estimate of a byte-pair/word-piece tokenizer's count without its vocabulary:
/// every punctuation or symbol character is one token; a run of letters is one
/// token up to 7 letters and one more per further 4 letters (common words are
/// whole tokens, rare clinical words split: "cardiomegaly" → 3); a run of
/// digits is one token per 3 digits. It tends to overcount slightly, so a
/// report it accepts is usually within the real tokenizer's limit too.
#[derive(Clone, Copy, Debug, Default)]
pub struct WordPieceEstimate;

impl TokenCounter for WordPieceEstimate {
    fn count_tokens(&self, text: &str) -> usize {
        let mut count = 0usize;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c.is_whitespace() {
                continue;
            }
            if c.is_alphabetic() {
                let mut n = 1usize;
                while chars.peek().is_some_and(|c| c.is_alphabetic()) {
                    chars.next();
                    n += 1;
                }
                count += 1 + n.saturating_sub(7).div_ceil(4);
            } else if c.is_ascii_digit() {
                let mut n = 1usize;
                while chars.peek().is_some_and(|c| c.is_ascii_digit()) {
                    chars.next();
                    n += 1;
                }
                count += n.div_ceil(3);
            } else {
                count += 1;
            }
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_counts_words_punctuation_and_long_words() {
        let est = WordPieceEstimate;
        assert_eq!(est.count_tokens(""), 0);
        assert_eq!(est.count_tokens("No acute process."), 4);
        assert_eq!(est.count_tokens("cardiomegaly"), 3);
        assert_eq!(est.count_tokens("1234"), 2);
        let words = |t: &str| t.split_whitespace().count();
        assert_eq!(words.count_tokens("a b c"), 3);
    }
}
