//! Shape, strides and offset: how a tensor's elements sit in its storage.
//! Views (reshape, permute, narrow, broadcast, squeeze) only change the layout.

use crate::{Error, Result};

/// Shape, element strides and starting offset of a tensor view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
}

/// Row-major strides of a contiguous tensor of `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// Normalise a possibly negative dimension index.
pub fn resolve_dim(dim: isize, rank: usize, op: &'static str) -> Result<usize> {
    let d = if dim < 0 { dim + rank as isize } else { dim };
    if d < 0 || d as usize >= rank.max(1) {
        return Err(Error::bad_shape(op, format!("dimension {dim} out of range for rank {rank}")));
    }
    Ok(d as usize)
}

/// The shape two shapes broadcast to (NumPy rules).
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
        let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(Error::ShapeMismatch { op, lhs: a.to_vec(), rhs: b.to_vec() }),
        };
    }
    Ok(out)
}

impl Layout {
    /// A contiguous layout of `shape` starting at offset 0.
    pub fn contiguous(shape: &[usize]) -> Self {
        Layout { shape: shape.to_vec(), strides: contiguous_strides(shape), offset: 0 }
    }

    /// A layout from parts; the caller guarantees it stays within its storage.
    pub fn new(shape: Vec<usize>, strides: Vec<usize>, offset: usize) -> Self {
        debug_assert_eq!(shape.len(), strides.len());
        Layout { shape, strides, offset }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }
    pub fn offset(&self) -> usize {
        self.offset
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Row-major contiguous (size-1 dimensions may have any stride).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&d, &s) in self.shape.iter().zip(&self.strides).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected *= d;
        }
        true
    }

    /// The storage range `offset..offset+numel` when contiguous.
    pub fn contiguous_range(&self) -> Option<std::ops::Range<usize>> {
        self.is_contiguous().then(|| self.offset..self.offset + self.numel())
    }

    /// One past the largest storage index this view touches (0 if empty).
    pub fn storage_extent(&self) -> usize {
        if self.numel() == 0 {
            return self.offset;
        }
        self.offset + self.shape.iter().zip(&self.strides).map(|(&d, &s)| (d - 1) * s).sum::<usize>() + 1
    }

    /// Reshape without copying; `None` when the view's strides do not allow it.
    pub fn reshape(&self, shape: &[usize]) -> Option<Layout> {
        if self.is_contiguous() {
            return Some(Layout { shape: shape.to_vec(), strides: contiguous_strides(shape), offset: self.offset });
        }
        // Non-contiguous: try to split/merge dimension groups that are themselves contiguous.
        let (old_shape, old_strides): (Vec<usize>, Vec<usize>) =
            self.shape.iter().zip(&self.strides).filter(|(&d, _)| d != 1).map(|(&d, &s)| (d, s)).unzip();
        let mut new_strides = vec![0; shape.len()];
        let (mut oi, mut ni) = (0, 0);
        while ni < shape.len() || oi < old_shape.len() {
            if ni < shape.len() && shape[ni] == 1 {
                new_strides[ni] = 1;
                ni += 1;
                continue;
            }
            if oi >= old_shape.len() || ni >= shape.len() {
                return None;
            }
            // Gather a run of old dims and new dims with equal products.
            let (o0, n0) = (oi, ni);
            let (mut po, mut pn) = (old_shape[oi], shape[ni]);
            oi += 1;
            ni += 1;
            while po != pn {
                if po < pn {
                    if oi >= old_shape.len() {
                        return None;
                    }
                    po *= old_shape[oi];
                    oi += 1;
                } else {
                    if ni >= shape.len() {
                        return None;
                    }
                    pn *= shape[ni];
                    ni += 1;
                }
            }
            // The old run must be contiguous within itself.
            for j in o0..oi - 1 {
                if old_strides[j] != old_strides[j + 1] * old_shape[j + 1] {
                    return None;
                }
            }
            let mut stride = old_strides[oi - 1];
            for j in (n0..ni).rev() {
                new_strides[j] = stride;
                stride *= shape[j];
            }
        }
        Some(Layout { shape: shape.to_vec(), strides: new_strides, offset: self.offset })
    }

    /// Reorder dimensions.
    pub fn permute(&self, dims: &[usize]) -> Result<Layout> {
        let rank = self.rank();
        let mut seen = vec![false; rank];
        if dims.len() != rank || dims.iter().any(|&d| d >= rank || std::mem::replace(&mut seen[d], true)) {
            return Err(Error::bad_shape("permute", format!("{dims:?} is not a permutation of 0..{rank}")));
        }
        Ok(Layout {
            shape: dims.iter().map(|&d| self.shape[d]).collect(),
            strides: dims.iter().map(|&d| self.strides[d]).collect(),
            offset: self.offset,
        })
    }

    /// Keep `len` entries of dimension `dim` starting at `start`.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Layout> {
        if dim >= self.rank() || start + len > self.shape[dim] {
            return Err(Error::bad_shape(
                "narrow",
                format!("range {start}..{} out of bounds for dim {dim} of shape {:?}", start + len, self.shape),
            ));
        }
        let mut shape = self.shape.clone();
        shape[dim] = len;
        Ok(Layout { shape, strides: self.strides.clone(), offset: self.offset + start * self.strides[dim] })
    }

    /// Broadcast to a larger shape by giving stride 0 to expanded dims.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Layout> {
        if shape.len() < self.rank() {
            return Err(Error::ShapeMismatch { op: "broadcast_to", lhs: self.shape.clone(), rhs: shape.to_vec() });
        }
        let extra = shape.len() - self.rank();
        let mut strides = vec![0; shape.len()];
        for i in 0..self.rank() {
            let (d, t) = (self.shape[i], shape[i + extra]);
            strides[i + extra] = if d == t {
                self.strides[i]
            } else if d == 1 {
                0
            } else {
                return Err(Error::ShapeMismatch { op: "broadcast_to", lhs: self.shape.clone(), rhs: shape.to_vec() });
            };
        }
        Ok(Layout { shape: shape.to_vec(), strides, offset: self.offset })
    }

    /// Storage offsets of every element in row-major order.
    pub fn offsets(&self) -> StridedOffsets<'_> {
        StridedOffsets::new(self)
    }

    /// Merge adjacent dimensions that are contiguous with each other, keeping
    /// the visiting order; used by kernels to shorten their index loops.
    pub fn coalesced(shape: &[usize], strides_list: &[&[usize]]) -> (Vec<usize>, Vec<Vec<usize>>) {
        let mut out_shape: Vec<usize> = Vec::with_capacity(shape.len());
        let mut out_strides: Vec<Vec<usize>> = vec![Vec::with_capacity(shape.len()); strides_list.len()];
        for (i, &d) in shape.iter().enumerate() {
            if d == 1 {
                continue;
            }
            let mergeable =
                !out_shape.is_empty() && strides_list.iter().enumerate().all(|(k, s)| *out_strides[k].last().unwrap() == s[i] * d);
            if mergeable {
                *out_shape.last_mut().unwrap() *= d;
                for (k, s) in strides_list.iter().enumerate() {
                    *out_strides[k].last_mut().unwrap() = s[i];
                }
            } else {
                out_shape.push(d);
                for (k, s) in strides_list.iter().enumerate() {
                    out_strides[k].push(s[i]);
                }
            }
        }
        if out_shape.is_empty() {
            out_shape.push(1);
            for s in out_strides.iter_mut() {
                s.push(1);
            }
        }
        (out_shape, out_strides)
    }
}

/// Iterator over the storage offsets of a strided view, in row-major order.
pub struct StridedOffsets<'a> {
    layout: &'a Layout,
    index: Vec<usize>,
    next: Option<usize>,
}

impl<'a> StridedOffsets<'a> {
    fn new(layout: &'a Layout) -> Self {
        let next = (layout.numel() > 0).then_some(layout.offset);
        StridedOffsets { layout, index: vec![0; layout.rank()], next }
    }
}

impl Iterator for StridedOffsets<'_> {
    type Item = usize;
    #[inline]
    fn next(&mut self) -> Option<usize> {
        let cur = self.next?;
        let mut off = cur;
        let mut d = self.layout.rank();
        loop {
            if d == 0 {
                self.next = None;
                break;
            }
            d -= 1;
            self.index[d] += 1;
            off += self.layout.strides[d];
            if self.index[d] < self.layout.shape[d] {
                self.next = Some(off);
                break;
            }
            off -= self.layout.strides[d] * self.index[d];
            self.index[d] = 0;
        }
        Some(cur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_of_transposed_view_splits_contiguous_runs() {
        let l = Layout::contiguous(&[2, 3, 4]).permute(&[1, 0, 2]).unwrap(); // [3,2,4]
        assert!(l.reshape(&[3, 8]).is_none());
        let r = l.reshape(&[3, 2, 2, 2]).unwrap();
        assert_eq!(r.strides(), &[4, 12, 2, 1]);
    }

    #[test]
    fn offsets_follow_row_major_order() {
        let l = Layout::contiguous(&[2, 3]).permute(&[1, 0]).unwrap();
        assert_eq!(l.offsets().collect::<Vec<_>>(), vec![0, 3, 1, 4, 2, 5]);
    }
}
