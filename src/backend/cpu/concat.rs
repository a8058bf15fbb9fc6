//! Concatenation: block copies of contiguous parts into a row-major output.
//!
//! Seen as a matrix of `outer` rows, the output row is the parts' rows laid
//! side by side (the concatenated dim and everything after it are flattened
//! into the row), so each part is one strided block copy.

use super::PARALLEL_MIN;
use rayon::prelude::*;

/// Copy `part` (contiguous, `outer` rows of `part_width`) into columns
/// `col..col + part_width` of `out` (`outer` rows of `out_width`).
pub fn write_part<T: Copy + Send + Sync>(out: &mut [T], out_width: usize, col: usize, part: &[T], part_width: usize) {
    if part_width == 0 || out_width == 0 {
        return;
    }
    let copy = |(dst, src): (&mut [T], &[T])| dst[col..col + part_width].copy_from_slice(src);
    if part.len() >= PARALLEL_MIN && out.len() > out_width {
        let rows_per_chunk = (PARALLEL_MIN / out_width).max(1);
        out.par_chunks_mut(rows_per_chunk * out_width).zip(part.par_chunks(rows_per_chunk * part_width)).for_each(|(o, p)| {
            o.chunks_exact_mut(out_width).zip(p.chunks_exact(part_width)).for_each(copy);
        });
    } else {
        out.chunks_exact_mut(out_width).zip(part.chunks_exact(part_width)).for_each(copy);
    }
}
