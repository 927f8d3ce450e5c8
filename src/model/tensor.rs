//! Typed tensors: one value of any ONNX element type a tabular or vision model takes or gives
//! (issue #13), with the conversions every layer needs — concatenation and splitting along the
//! batch dimension for the batcher, little-endian bytes for KServe V2's binary extension and
//! exact test fixtures, and ONNX Runtime values in and out.
//!
//! Representation: a row-major `Vec<T>` per element type plus a `Vec<usize>` shape, not
//! `ndarray`. What the server does with tensors is whole-row work on contiguous memory
//! (append a request's rows, cut a batch's rows back out, hand a buffer to ONNX Runtime, copy
//! bytes in and out of a V2 body); a flat buffer does each of those as one slice operation,
//! while `ndarray` would add strides and layouts we must then reject (ONNX Runtime takes only
//! standard layout) and a second dependency version to keep in step with ort's. ort borrows
//! `(shape, &[T])` without a copy just as it borrows an `ArrayView`, so nothing is lost; the
//! crate's `ndarray` dependency and ort's `ndarray` feature can go once the `Rows` path is
//! replaced by this one.

use std::fmt;

use half::f16;
use ort::session::SessionInputValue;
use ort::value::{DynValue, Tensor, TensorElementType, TensorRef};

/// Generates everything that lists the served element types from the one table below:
/// [`ElementType`] with its names and its ONNX Runtime counterpart (ort names its variants as
/// we do), [`TensorData`], and the per-type macros (`on_data!`, `map_data!`, `zip_data!`,
/// `data_of_type!`) the tensor operations are written with, so that a type is added in one row.
/// Fixed-width types and strings are listed apart because their encodings and ONNX Runtime
/// calls differ. `$d` is a `$` handed in, which the generated macros need for their own
/// metavariables.
macro_rules! element_types {
    (
        $d:tt
        fixed [$($v:ident($t:ty) $onnx:literal $v2:literal,)*]
        strings $sv:ident($st:ty) $sonnx:literal $sv2:literal,
    ) => {
        /// An ONNX tensor element type the server serves. ONNX defines a few more (bfloat16,
        /// complex, float8, 4-bit ints); no tabular or vision converter we know emits them, so a
        /// model using one is refused at load with the type named.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ElementType {
            $($v,)*
            $sv,
        }

        impl ElementType {
            /// Every served type, for documentation and exhaustive tests.
            // The length counts the table's rows.
            pub const ALL: [ElementType; [$(stringify!($v),)* stringify!($sv)].len()] =
                [$(ElementType::$v,)* ElementType::$sv];

            /// The name ONNX gives the type in `tensor(...)` (what Netron and onnx.helper
            /// print), used in messages about the model file.
            pub fn onnx_name(self) -> &'static str {
                match self {
                    $(ElementType::$v => $onnx,)*
                    ElementType::$sv => $sonnx,
                }
            }

            /// The KServe V2 / Triton datatype name, which V2 requests and metadata carry.
            pub fn v2_name(self) -> &'static str {
                match self {
                    $(ElementType::$v => $v2,)*
                    ElementType::$sv => $sv2,
                }
            }

            /// The served type for ONNX Runtime's element type; `None` for the ones refused.
            pub fn from_ort(ty: TensorElementType) -> Option<ElementType> {
                Some(match ty {
                    $(TensorElementType::$v => ElementType::$v,)*
                    TensorElementType::$sv => ElementType::$sv,
                    _ => return None,
                })
            }

            /// Bytes per element in the little-endian encoding; `None` for strings, whose
            /// elements are length-prefixed.
            pub fn byte_width(self) -> Option<usize> {
                match self {
                    $(ElementType::$v => Some(<$t as LeBytes>::WIDTH),)*
                    ElementType::$sv => None,
                }
            }
        }

        /// A tensor's elements, row-major, in their own Rust type: one variant per
        /// [`ElementType`], so integers stay exact and strings stay strings through every layer.
        #[derive(Debug, Clone, PartialEq)]
        pub enum TensorData {
            $($v(Vec<$t>),)*
            $sv(Vec<$st>),
        }

        impl TensorData {
            /// The element type of these values.
            pub fn element_type(&self) -> ElementType {
                match self {
                    $(TensorData::$v(_) => ElementType::$v,)*
                    TensorData::$sv(_) => ElementType::$sv,
                }
            }
        }

        /// Evaluates an expression on the vector inside any [`TensorData`]: `$fixed` for the
        /// fixed-width variants, `$strings` for strings.
        macro_rules! on_data {
            ($d data:expr, $d values:ident => $d fixed:expr, $d strs:ident => $d strings:expr) => {
                match $d data {
                    $(TensorData::$v($d values) => $d fixed,)*
                    TensorData::$sv($d strs) => $d strings,
                }
            };
        }

        /// Builds the same [`TensorData`] variant from the vector inside any: `$new` must give
        /// a `Vec` of the element type of `$values`, whatever that is.
        macro_rules! map_data {
            ($d data:expr, $d values:ident => $d new:expr) => {
                match $d data {
                    $(TensorData::$v($d values) => TensorData::$v($d new),)*
                    TensorData::$sv($d values) => TensorData::$sv($d new),
                }
            };
        }

        /// Evaluates `$same` on the vectors inside two [`TensorData`] of one variant, `$differ`
        /// when their variants differ.
        macro_rules! zip_data {
            ($d pair:expr, ($d a:ident, $d b:ident) => $d same:expr, _ => $d differ:expr) => {
                match $d pair {
                    $((TensorData::$v($d a), TensorData::$v($d b)) => $d same,)*
                    (TensorData::$sv($d a), TensorData::$sv($d b)) => $d same,
                    _ => $d differ,
                }
            };
        }

        /// Builds the [`TensorData`] variant of `$ty`: `$fixed` must give a `Vec<T>` for any
        /// fixed-width `T` (named `$elem` inside it), `$strings` the strings.
        macro_rules! data_of_type {
            ($d ty:expr, $d elem:ident => $d fixed:expr, $d strings:expr) => {
                match $d ty {
                    $(ElementType::$v => TensorData::$v({
                        type $d elem = $t;
                        $d fixed
                    }),)*
                    ElementType::$sv => TensorData::$sv($d strings),
                }
            };
        }
    };
}

element_types! {
    $
    fixed [
    //  variant  Rust type  ONNX name  V2 name
        Bool     (bool)     "bool"     "BOOL",
        Uint8    (u8)       "uint8"    "UINT8",
        Uint16   (u16)      "uint16"   "UINT16",
        Uint32   (u32)      "uint32"   "UINT32",
        Uint64   (u64)      "uint64"   "UINT64",
        Int8     (i8)       "int8"     "INT8",
        Int16    (i16)      "int16"    "INT16",
        Int32    (i32)      "int32"    "INT32",
        Int64    (i64)      "int64"    "INT64",
        Float16  (f16)      "float16"  "FP16",
        Float32  (f32)      "float"    "FP32",
        Float64  (f64)      "double"   "FP64",
    ]
    strings
        String   (String)   "string"   "BYTES",
}

impl ElementType {
    /// The type a V2 `datatype` names, if the server serves it.
    pub fn from_v2_name(name: &str) -> Option<ElementType> {
        ElementType::ALL.into_iter().find(|t| t.v2_name() == name)
    }

    /// True for the floating-point types (what a regressor outputs).
    pub fn is_float(self) -> bool {
        matches!(
            self,
            ElementType::Float16 | ElementType::Float32 | ElementType::Float64
        )
    }
}

impl fmt::Display for ElementType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.onnx_name())
    }
}

impl TensorData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        on_data!(self, v => v.len(), v => v.len())
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// No elements of `ty`, with room for `capacity`: the start of a concatenation.
    fn with_capacity(ty: ElementType, capacity: usize) -> TensorData {
        data_of_type!(ty, T => Vec::<T>::with_capacity(capacity), Vec::with_capacity(capacity))
    }

    /// Appends `other`'s elements; false (nothing appended) when its type differs.
    fn extend_from(&mut self, other: &TensorData) -> bool {
        zip_data!((self, other), (a, b) => a.extend_from_slice(b), _ => return false);
        true
    }

    /// The elements at `indices`, in that order (an index may repeat): how an explanation
    /// builds a batch of rows mixing a row's values with background values.
    pub fn gather(&self, indices: &[usize]) -> TensorData {
        map_data!(self, v => indices.iter().map(|&i| &v[i]).cloned().collect())
    }

    /// The elements as f64 (exactly, for every float type), for a floating-point tensor;
    /// `None` for integers, booleans and strings, which are not scores.
    pub fn to_f64(&self) -> Option<Vec<f64>> {
        match self {
            TensorData::Float16(v) => Some(v.iter().map(|x| x.to_f64()).collect()),
            TensorData::Float32(v) => Some(v.iter().map(|&x| f64::from(x)).collect()),
            TensorData::Float64(v) => Some(v.clone()),
            _ => None,
        }
    }

    /// A copy of elements `start..end`.
    fn slice(&self, start: usize, end: usize) -> TensorData {
        map_data!(self, v => v[start..end].to_vec())
    }
}

/// Why a tensor could not be built, combined, split or converted. Each names the part, the
/// dimension or the byte at fault, since the caller turns it into a message about a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorError {
    #[error("shape {shape:?} holds {expected} elements, got {got}")]
    ElementCount {
        shape: Vec<usize>,
        expected: usize,
        got: usize,
    },
    #[error("nothing to concatenate")]
    NothingToConcatenate,
    #[error("a tensor of rank 0 has no batch dimension")]
    NoBatchDimension,
    #[error("part {part} is {got}, part 0 is {expected}")]
    ElementTypeMismatch {
        part: usize,
        expected: ElementType,
        got: ElementType,
    },
    #[error("part {part} has trailing dimensions {got:?}, part 0 has {expected:?}")]
    TrailingDims {
        part: usize,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("split sizes add up to {sum}, the batch has {batch} rows")]
    SplitSizes { sum: usize, batch: usize },
    #[error("{ty} data of shape {shape:?} takes {expected} bytes, got {got}")]
    ByteLength {
        ty: ElementType,
        shape: Vec<usize>,
        expected: usize,
        got: usize,
    },
    #[error("element {index}: {reason}")]
    BadElement { index: usize, reason: String },
    #[error("ONNX Runtime value: {0}")]
    Runtime(String),
}

impl From<ort::Error> for TensorError {
    fn from(e: ort::Error) -> Self {
        TensorError::Runtime(e.to_string())
    }
}

/// Element `index` of a probe input, in [-2, 2): the top 53 bits of a multiplicative (Fibonacci)
/// hash of the index, so consecutive elements are spread evenly and every run gives the same.
pub fn probe_value(index: usize) -> f64 {
    let bits = (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    bits as f64 / (1u64 << 53) as f64 * 4.0 - 2.0
}

/// A tensor: element type, shape and row-major data, consistent by construction (the data holds
/// exactly the elements the shape says).
#[derive(Debug, Clone, PartialEq)]
pub struct TypedTensor {
    shape: Vec<usize>,
    data: TensorData,
}

impl TypedTensor {
    /// Pairs a shape with its data; errors when the element count differs.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<TypedTensor, TensorError> {
        let expected = shape.iter().product::<usize>();
        if data.len() != expected {
            return Err(TensorError::ElementCount {
                shape,
                expected,
                got: data.len(),
            });
        }
        Ok(TypedTensor { shape, data })
    }

    /// The dimensions, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// The elements, taking ownership.
    pub fn into_data(self) -> TensorData {
        self.data
    }

    /// The element type.
    pub fn element_type(&self) -> ElementType {
        self.data.element_type()
    }

    /// The first dimension (rows of a batch); `None` for a scalar.
    pub fn batch_size(&self) -> Option<usize> {
        self.shape.first().copied()
    }

    /// Elements per row: the product of the dimensions after the first.
    fn row_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// A tensor of `shape` holding zeros (`false`, empty strings): a warm-up input.
    pub fn zeros(ty: ElementType, shape: Vec<usize>) -> TypedTensor {
        let count = shape.iter().product::<usize>();
        let data = data_of_type!(ty, T => vec![T::default(); count], vec![String::new(); count]);
        TypedTensor { shape, data }
    }

    /// A tensor of `shape` holding varied, reproducible values: floats spread over [-2, 2)
    /// ([`probe_value`]), whole numbers 0 to 3 (a valid count or category index in any integer
    /// type), both booleans, empty strings (no other string is valid for every model). The
    /// batcher's probe input: on zeros, kernels that sum in another order give the same bits.
    pub fn probe(ty: ElementType, shape: Vec<usize>) -> TypedTensor {
        let count = shape.iter().product::<usize>();
        let spread = (0..count).map(probe_value);
        let data = match ty {
            ElementType::Float16 => TensorData::Float16(spread.map(f16::from_f64).collect()),
            ElementType::Float32 => TensorData::Float32(spread.map(|x| x as f32).collect()),
            ElementType::Float64 => TensorData::Float64(spread.collect()),
            ElementType::String => TensorData::String(vec![String::new(); count]),
            whole => {
                // The value in the low byte of each little-endian element: the same number in
                // every integer type, 0 or 1 for a bool.
                let width = whole.byte_width().expect("fixed width");
                let top = if whole == ElementType::Bool { 1.0 } else { 3.0 };
                let mut bytes = vec![0; count * width];
                for (element, x) in bytes.chunks_exact_mut(width).zip(spread) {
                    element[0] = ((x + 2.0) / 4.0 * (top + 1.0)) as u8;
                }
                return TypedTensor::from_le_bytes(whole, shape, &bytes)
                    .expect("small whole numbers are valid in every fixed-width type");
            }
        };
        TypedTensor { shape, data }
    }

    /// Joins tensors along the first dimension, as the batcher does with the requests it runs
    /// together. Every part must have the same element type and the same trailing dimensions.
    pub fn concat_batch(parts: &[&TypedTensor]) -> Result<TypedTensor, TensorError> {
        let first = parts.first().ok_or(TensorError::NothingToConcatenate)?;
        if first.shape.is_empty() {
            return Err(TensorError::NoBatchDimension);
        }
        let trailing = &first.shape[1..];
        let ty = first.element_type();
        let mut rows = 0;
        for (part, tensor) in parts.iter().enumerate() {
            if tensor.element_type() != ty {
                return Err(TensorError::ElementTypeMismatch {
                    part,
                    expected: ty,
                    got: tensor.element_type(),
                });
            }
            if tensor.shape.get(1..) != Some(trailing) {
                return Err(TensorError::TrailingDims {
                    part,
                    expected: trailing.to_vec(),
                    got: tensor.shape.get(1..).unwrap_or_default().to_vec(),
                });
            }
            rows += tensor.shape[0];
        }
        let mut data = TensorData::with_capacity(ty, rows * first.row_len());
        for tensor in parts {
            let same_type = data.extend_from(&tensor.data);
            debug_assert!(same_type, "element types were checked above");
        }
        let mut shape = first.shape.clone();
        shape[0] = rows;
        Ok(TypedTensor { shape, data })
    }

    /// A copy of rows `start..end` of the first dimension: one request's share of a batch.
    pub fn slice_batch(&self, start: usize, end: usize) -> Result<TypedTensor, TensorError> {
        let batch = self.batch_size().ok_or(TensorError::NoBatchDimension)?;
        if start > end || end > batch {
            return Err(TensorError::SplitSizes { sum: end, batch });
        }
        let row_len = self.row_len();
        let mut shape = self.shape.clone();
        shape[0] = end - start;
        Ok(TypedTensor {
            shape,
            data: self.data.slice(start * row_len, end * row_len),
        })
    }

    /// Cuts the first dimension into consecutive parts of `sizes` rows: the batcher's way back
    /// from one batch output to each request's rows.
    pub fn split_batch(&self, sizes: &[usize]) -> Result<Vec<TypedTensor>, TensorError> {
        let batch = self.batch_size().ok_or(TensorError::NoBatchDimension)?;
        let sum = sizes.iter().sum::<usize>();
        if sum != batch {
            return Err(TensorError::SplitSizes { sum, batch });
        }
        let row_len = self.row_len();
        let mut start = 0;
        let mut parts = Vec::with_capacity(sizes.len());
        for &rows in sizes {
            let mut shape = self.shape.clone();
            shape[0] = rows;
            let end = start + rows * row_len;
            parts.push(TypedTensor {
                shape,
                data: self.data.slice(start, end),
            });
            start = end;
        }
        Ok(parts)
    }

    /// Reads elements from their little-endian bytes: KServe V2's binary tensor data, where
    /// strings (`BYTES`) are each a 4-byte little-endian length followed by the UTF-8 bytes.
    pub fn from_le_bytes(
        ty: ElementType,
        shape: Vec<usize>,
        bytes: &[u8],
    ) -> Result<TypedTensor, TensorError> {
        let count = shape.iter().product::<usize>();
        if let Some(width) = ty.byte_width() {
            if bytes.len() != count * width {
                return Err(TensorError::ByteLength {
                    ty,
                    shape,
                    expected: count * width,
                    got: bytes.len(),
                });
            }
        }
        let data = data_of_type!(ty, T => read_le::<T>(bytes)?, read_strings(bytes, count)?);
        TypedTensor::new(shape, data)
    }

    /// The elements as little-endian bytes, the inverse of [`TypedTensor::from_le_bytes`].
    pub fn to_le_bytes(&self) -> Vec<u8> {
        on_data!(&self.data, v => write_le(v), v => write_strings(v))
    }

    /// The tensor as an ONNX Runtime input. Fixed-width data is lent to ONNX Runtime in place
    /// (no copy); strings are copied, because ONNX Runtime keeps its own string objects.
    pub fn to_ort_input(&self) -> Result<SessionInputValue<'_>, TensorError> {
        let shape = self.shape.as_slice();
        Ok(on_data!(
            &self.data,
            v => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
            v => Tensor::from_string_array((shape, v.as_slice()))?.into()
        ))
    }

    /// Copies an ONNX Runtime output tensor out (outputs borrow the session, so they cannot
    /// outlive the call).
    pub fn from_ort_value(value: &DynValue) -> Result<TypedTensor, TensorError> {
        let ort_type = value.dtype().tensor_type().ok_or_else(|| {
            TensorError::Runtime(format!("expected a tensor, got {}", value.dtype()))
        })?;
        let ty = ElementType::from_ort(ort_type)
            .ok_or_else(|| TensorError::Runtime(format!("unsupported element type {ort_type}")))?;
        let shape = value
            .dtype()
            .tensor_shape()
            .map(|s| s.iter().map(|&d| d as usize).collect())
            .unwrap_or_default();
        let data = data_of_type!(
            ty,
            T => value.try_extract_tensor::<T>()?.1.to_vec(),
            value.try_extract_strings()?.1
        );
        TypedTensor::new(shape, data)
    }
}

/// Fixed-width element types as little-endian bytes.
trait LeBytes: Sized + Copy {
    const WIDTH: usize;
    /// The element in `bytes` (exactly `WIDTH` long), or why those bytes are not one.
    fn read(bytes: &[u8]) -> Result<Self, String>;
    fn write(self, out: &mut Vec<u8>);
}

macro_rules! le_bytes_for_numbers {
    ($($t:ty),*) => {$(
        impl LeBytes for $t {
            const WIDTH: usize = std::mem::size_of::<$t>();
            fn read(bytes: &[u8]) -> Result<Self, String> {
                Ok(<$t>::from_le_bytes(bytes.try_into().expect("chunk of WIDTH bytes")))
            }
            fn write(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
le_bytes_for_numbers!(u8, u16, u32, u64, i8, i16, i32, i64, f16, f32, f64);

impl LeBytes for bool {
    const WIDTH: usize = 1;
    fn read(bytes: &[u8]) -> Result<Self, String> {
        match bytes[0] {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(format!("byte {other} is not a bool (0 or 1)")),
        }
    }
    fn write(self, out: &mut Vec<u8>) {
        out.push(u8::from(self));
    }
}

/// Decodes `bytes` (a whole number of elements, checked by the caller).
fn read_le<T: LeBytes>(bytes: &[u8]) -> Result<Vec<T>, TensorError> {
    bytes
        .chunks_exact(T::WIDTH)
        .enumerate()
        .map(|(index, chunk)| {
            T::read(chunk).map_err(|reason| TensorError::BadElement { index, reason })
        })
        .collect()
}

fn write_le<T: LeBytes>(values: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * T::WIDTH);
    for &v in values {
        v.write(&mut out);
    }
    out
}

/// Decodes `count` length-prefixed UTF-8 strings filling `bytes` exactly.
fn read_strings(mut bytes: &[u8], count: usize) -> Result<Vec<String>, TensorError> {
    let bad = |index: usize, reason: String| TensorError::BadElement { index, reason };
    // Each string takes at least its 4-byte length: a shape claiming more is refused below
    // without first reserving room for it.
    let mut strings = Vec::with_capacity(count.min(bytes.len() / 4));
    for index in 0..count {
        let (len, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or_else(|| bad(index, "the data ends before its 4-byte length".into()))?;
        let len = u32::from_le_bytes(*len) as usize;
        let (text, rest) = rest
            .split_at_checked(len)
            .ok_or_else(|| bad(index, format!("length {len} runs past the end of the data")))?;
        let text = std::str::from_utf8(text).map_err(|e| bad(index, format!("not UTF-8: {e}")))?;
        strings.push(text.to_owned());
        bytes = rest;
    }
    if !bytes.is_empty() {
        return Err(bad(
            count,
            format!("{} bytes left after {count} strings", bytes.len()),
        ));
    }
    Ok(strings)
}

fn write_strings(values: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.iter().map(|s| 4 + s.len()).sum());
    for s in values {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(shape: Vec<usize>, v: Vec<f32>) -> TypedTensor {
        TypedTensor::new(shape, TensorData::Float32(v)).unwrap()
    }

    #[test]
    fn names_round_trip_and_cover_every_type() {
        let v2: Vec<&str> = ElementType::ALL.iter().map(|t| t.v2_name()).collect();
        assert_eq!(
            v2,
            [
                "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                "FP16", "FP32", "FP64", "BYTES"
            ]
        );
        for ty in ElementType::ALL {
            assert_eq!(ElementType::from_v2_name(ty.v2_name()), Some(ty));
        }
        assert_eq!(ElementType::from_v2_name("BF16"), None);
        assert_eq!(ElementType::Float64.onnx_name(), "double");
        assert_eq!(ElementType::Float32.to_string(), "float");
        assert_eq!(
            ElementType::from_ort(TensorElementType::Float16),
            Some(ElementType::Float16)
        );
        assert_eq!(ElementType::from_ort(TensorElementType::Bfloat16), None);
    }

    #[test]
    fn probe_values_are_varied_reproducible_and_valid_in_every_type() {
        let spread: Vec<f64> = (0..256).map(probe_value).collect();
        assert!(spread.iter().all(|x| (-2.0..2.0).contains(x)));
        let distinct: std::collections::HashSet<u64> = spread.iter().map(|x| x.to_bits()).collect();
        assert_eq!(distinct.len(), 256);
        assert_eq!(spread, (0..256).map(probe_value).collect::<Vec<f64>>());
        for ty in ElementType::ALL {
            let probe = TypedTensor::probe(ty, vec![8, 4]);
            assert_eq!((probe.element_type(), probe.shape()), (ty, &[8, 4][..]));
        }
        let TensorData::Int8(whole) = TypedTensor::probe(ElementType::Int8, vec![64]).data else {
            unreachable!()
        };
        let seen: std::collections::BTreeSet<i8> = whole.into_iter().collect();
        assert_eq!(seen.into_iter().collect::<Vec<i8>>(), [0, 1, 2, 3]);
        let TensorData::Bool(flags) = TypedTensor::probe(ElementType::Bool, vec![64]).data else {
            unreachable!()
        };
        assert!(flags.contains(&true) && flags.contains(&false));
    }

    #[test]
    fn new_refuses_data_that_does_not_fill_the_shape() {
        let err = TypedTensor::new(vec![2, 3], TensorData::Int64(vec![1, 2, 3])).unwrap_err();
        assert_eq!(
            err,
            TensorError::ElementCount {
                shape: vec![2, 3],
                expected: 6,
                got: 3
            }
        );
        assert_eq!(err.to_string(), "shape [2, 3] holds 6 elements, got 3");
    }

    #[test]
    fn concat_then_split_gives_the_parts_back() {
        let a = f32s(vec![1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]);
        let b = f32s(
            vec![2, 2, 2],
            vec![5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0],
        );
        let empty = f32s(vec![0, 2, 2], vec![]);
        let joined = TypedTensor::concat_batch(&[&a, &empty, &b]).unwrap();
        assert_eq!(joined.shape(), [3, 2, 2]);
        assert_eq!(
            joined.data(),
            &TensorData::Float32((1..=12).map(|i| i as f32).collect())
        );
        let parts = joined.split_batch(&[1, 0, 2]).unwrap();
        assert_eq!(parts, vec![a, empty, b]);
    }

    #[test]
    fn concat_keeps_strings_and_integers_exact() {
        let a = TypedTensor::new(vec![1, 1], TensorData::String(vec!["paris".into()])).unwrap();
        let b = TypedTensor::new(vec![1, 1], TensorData::String(vec!["nice".into()])).unwrap();
        let joined = TypedTensor::concat_batch(&[&a, &b]).unwrap();
        assert_eq!(
            joined.data(),
            &TensorData::String(vec!["paris".into(), "nice".into()])
        );
        let big = TypedTensor::new(vec![1], TensorData::Int64(vec![i64::MAX])).unwrap();
        let joined = TypedTensor::concat_batch(&[&big, &big]).unwrap();
        assert_eq!(joined.data(), &TensorData::Int64(vec![i64::MAX, i64::MAX]));
    }

    #[test]
    fn concat_refuses_mismatched_parts() {
        let a = f32s(vec![1, 3], vec![0.0; 3]);
        let b = f32s(vec![1, 4], vec![0.0; 4]);
        assert_eq!(
            TypedTensor::concat_batch(&[&a, &b])
                .unwrap_err()
                .to_string(),
            "part 1 has trailing dimensions [4], part 0 has [3]"
        );
        let rank1 = f32s(vec![3], vec![0.0; 3]);
        assert_eq!(
            TypedTensor::concat_batch(&[&a, &rank1]).unwrap_err(),
            TensorError::TrailingDims {
                part: 1,
                expected: vec![3],
                got: vec![]
            }
        );
        let ints = TypedTensor::new(vec![1, 3], TensorData::Int32(vec![0; 3])).unwrap();
        assert_eq!(
            TypedTensor::concat_batch(&[&a, &ints])
                .unwrap_err()
                .to_string(),
            "part 1 is int32, part 0 is float"
        );
        let scalar = f32s(vec![], vec![1.0]);
        assert_eq!(
            TypedTensor::concat_batch(&[&scalar]).unwrap_err(),
            TensorError::NoBatchDimension
        );
        assert_eq!(
            TypedTensor::concat_batch(&[]).unwrap_err(),
            TensorError::NothingToConcatenate
        );
    }

    #[test]
    fn split_refuses_sizes_that_do_not_add_up() {
        let t = f32s(vec![3, 1], vec![1.0, 2.0, 3.0]);
        assert_eq!(
            t.split_batch(&[1, 1]).unwrap_err().to_string(),
            "split sizes add up to 2, the batch has 3 rows"
        );
    }

    #[test]
    fn le_bytes_round_trip_for_every_type() {
        let cases = [
            TensorData::Bool(vec![true, false]),
            TensorData::Uint8(vec![0, 255]),
            TensorData::Uint16(vec![1, u16::MAX]),
            TensorData::Uint32(vec![7, u32::MAX]),
            TensorData::Uint64(vec![9, u64::MAX]),
            TensorData::Int8(vec![-128, 127]),
            TensorData::Int16(vec![-2, i16::MAX]),
            TensorData::Int32(vec![-3, i32::MIN]),
            TensorData::Int64(vec![-4, i64::MIN]),
            TensorData::Float16(vec![f16::from_f32(0.5), f16::from_f32(-65504.0)]),
            TensorData::Float32(vec![0.1, f32::MIN_POSITIVE]),
            TensorData::Float64(vec![0.1, -0.0]),
            TensorData::String(vec!["é".into(), String::new()]),
        ];
        for data in cases {
            let ty = data.element_type();
            let t = TypedTensor::new(vec![2], data).unwrap();
            let bytes = t.to_le_bytes();
            if let Some(width) = ty.byte_width() {
                assert_eq!(bytes.len(), 2 * width, "{ty}");
            }
            assert_eq!(TypedTensor::from_le_bytes(ty, vec![2], &bytes).unwrap(), t);
        }
    }

    #[test]
    fn le_bytes_are_little_endian_and_strings_length_prefixed() {
        let t = TypedTensor::new(vec![1], TensorData::Float32(vec![1.0])).unwrap();
        assert_eq!(t.to_le_bytes(), [0x00, 0x00, 0x80, 0x3f]);
        let s = TypedTensor::new(vec![1], TensorData::String(vec!["ab".into()])).unwrap();
        assert_eq!(s.to_le_bytes(), [2, 0, 0, 0, b'a', b'b']);
    }

    #[test]
    fn from_le_bytes_names_what_is_wrong() {
        let err = TypedTensor::from_le_bytes(ElementType::Float64, vec![2], &[0; 12]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "double data of shape [2] takes 16 bytes, got 12"
        );
        let err = TypedTensor::from_le_bytes(ElementType::Bool, vec![2], &[1, 2]).unwrap_err();
        assert_eq!(err.to_string(), "element 1: byte 2 is not a bool (0 or 1)");
        let err = TypedTensor::from_le_bytes(ElementType::String, vec![1], &[5, 0, 0, 0, b'a'])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "element 0: length 5 runs past the end of the data"
        );
        let err = TypedTensor::from_le_bytes(ElementType::String, vec![1], &[1, 0, 0, 0, 0xff])
            .unwrap_err();
        assert!(err.to_string().starts_with("element 0: not UTF-8"), "{err}");
        let err =
            TypedTensor::from_le_bytes(ElementType::String, vec![1], &[0, 0, 0, 0, 9]).unwrap_err();
        assert_eq!(err.to_string(), "element 1: 1 bytes left after 1 strings");
    }

    #[test]
    fn gather_picks_elements_in_order_and_floats_widen_exactly() {
        let strings = TensorData::String(vec!["a".into(), "b".into(), "c".into()]);
        assert_eq!(
            strings.gather(&[2, 0, 2]),
            TensorData::String(vec!["c".into(), "a".into(), "c".into()])
        );
        assert_eq!(
            TensorData::Int64(vec![7, 8]).gather(&[1, 1, 0]),
            TensorData::Int64(vec![8, 8, 7])
        );
        assert_eq!(
            TensorData::Float32(vec![0.1, 2.5]).to_f64(),
            Some(vec![f64::from(0.1f32), 2.5])
        );
        assert_eq!(TensorData::Float64(vec![0.1]).to_f64(), Some(vec![0.1]));
        assert_eq!(TensorData::Int64(vec![1]).to_f64(), None);
        assert_eq!(strings.to_f64(), None);
    }
}
