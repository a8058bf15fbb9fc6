//! Nearest-neighbour 2-d resize of NCHW planes (kernels/upsample.cu), from
//! the source row/column of every output row/column the op layer computes
//! with the CPU's rule. CPU twin: src/backend/cpu/upsample.rs.

use super::{check_float, dense, dptr, dtype_suffix, grid_for, launch, upload_i64, Arg, CudaStorage, Operand};
use crate::{Error, Result};

fn check_sources(op: &'static str, sources: &[usize], in_len: usize) -> Result<Vec<i64>> {
    sources
        .iter()
        .map(|&s| if s < in_len { Ok(s as i64) } else { Err(Error::msg(format!("{op}: source index {s} is outside {in_len}"))) })
        .collect()
}

/// For each input index, the `[first, end)` output indices reading it, flattened.
/// The nearest mapping is monotone, so each input's readers are contiguous.
fn reader_ranges(op: &'static str, sources: &[usize], in_len: usize) -> Result<Vec<i64>> {
    let mut ranges = vec![0i64; 2 * in_len];
    let mut o = 0;
    for i in 0..in_len {
        let first = o;
        while o < sources.len() && sources[o] == i {
            o += 1;
        }
        ranges[2 * i] = first as i64;
        ranges[2 * i + 1] = o as i64;
    }
    if o != sources.len() {
        return Err(Error::msg(format!("{op}: source indices are not non-decreasing")));
    }
    Ok(ranges)
}

/// Planes of `[h, w]` resized to `rows.len() × cols.len()`, output (r, c) copying input (rows[r], cols[c]).
pub fn upsample_nearest2d(x: Operand<'_>, planes: usize, [h, w]: [usize; 2], rows: &[usize], cols: &[usize]) -> Result<CudaStorage> {
    const OP: &str = "upsample_nearest2d";
    check_float(OP, x.storage)?;
    if x.numel() != planes * h * w {
        return Err(Error::bad_shape(OP, format!("input of {} elements is not {planes} planes of {h}×{w}", x.numel())));
    }
    let (r, c) = (check_sources(OP, rows, h)?, check_sources(OP, cols, w)?);
    let xd = dense(OP, x)?;
    let dev = &xd.device;
    let n = planes * rows.len() * cols.len();
    let out = super::alloc(dev, xd.dtype, n, OP)?;
    if n == 0 {
        return Ok(out);
    }
    let (rd, cd) = (upload_i64(dev, &r, OP)?, upload_i64(dev, &c, OP)?);
    let args = [
        Arg::U64(planes as u64),
        Arg::U64(h as u64),
        Arg::U64(w as u64),
        Arg::U64(rows.len() as u64),
        Arg::U64(cols.len() as u64),
        Arg::U64(dptr(&rd)),
        Arg::U64(dptr(&cd)),
        Arg::U64(dptr(&xd)),
        Arg::U64(dptr(&out)),
    ];
    // SAFETY: upsample_nearest2d_fwd_T(planes, h, w, oh, ow, rows, cols, x, y): x holds
    // planes·h·w packed (checked), rows/cols oh/ow indices below h/w (checked), y planes·oh·ow.
    unsafe { launch(dev, "upsample", &format!("upsample_nearest2d_fwd_{}", dtype_suffix(xd.dtype)), grid_for(dev, n), OP, &args)? };
    Ok(out)
}

/// Gradient of [`upsample_nearest2d`]: each output gradient summed onto the input pixel it copied.
pub fn upsample_nearest2d_backward(
    dy: Operand<'_>,
    planes: usize,
    [h, w]: [usize; 2],
    rows: &[usize],
    cols: &[usize],
) -> Result<CudaStorage> {
    const OP: &str = "upsample_nearest2d_backward";
    check_float(OP, dy.storage)?;
    if dy.numel() != planes * rows.len() * cols.len() {
        return Err(Error::bad_shape(
            OP,
            format!("gradient of {} elements is not {planes} planes of {}×{}", dy.numel(), rows.len(), cols.len()),
        ));
    }
    check_sources(OP, rows, h)?;
    check_sources(OP, cols, w)?;
    let (rr, cr) = (reader_ranges(OP, rows, h)?, reader_ranges(OP, cols, w)?);
    let gd = dense(OP, dy)?;
    let dev = &gd.device;
    let n = planes * h * w;
    let out = super::alloc(dev, gd.dtype, n, OP)?;
    if n == 0 {
        return Ok(out);
    }
    let (rd, cd) = (upload_i64(dev, &rr, OP)?, upload_i64(dev, &cr, OP)?);
    let args = [
        Arg::U64(planes as u64),
        Arg::U64(h as u64),
        Arg::U64(w as u64),
        Arg::U64(rows.len() as u64),
        Arg::U64(cols.len() as u64),
        Arg::U64(dptr(&rd)),
        Arg::U64(dptr(&cd)),
        Arg::U64(dptr(&gd)),
        Arg::U64(dptr(&out)),
    ];
    // SAFETY: upsample_nearest2d_bwd_T(planes, h, w, oh, ow, row_ranges, col_ranges, dy, dx):
    // ranges 2h/2w entries within 0..oh/0..ow (built above), dy planes·oh·ow packed
    // (checked), dx planes·h·w.
    unsafe { launch(dev, "upsample", &format!("upsample_nearest2d_bwd_{}", dtype_suffix(gd.dtype)), grid_for(dev, n), OP, &args)? };
    Ok(out)
}
