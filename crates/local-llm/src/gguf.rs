//! A reader for the header of a GGUF file (versions 2 and 3): its metadata and where each
//! tensor's data lies. The tensor data itself is read by [`crate::llama`], one tensor at a
//! time.
//!
//! Layout (all little-endian): magic `GGUF`, version (u32), tensor count (u64), metadata
//! count (u64); the metadata entries (key string, value type u32, value); the tensor
//! entries (name, number of dimensions u32, dimensions u64 each — innermost first —, type
//! u32, offset u64 from the data section); then the data section, aligned to
//! `general.alignment` (32 by default). A string is a u64 length followed by UTF-8 bytes.

use std::collections::HashMap;
use std::io::{BufReader, Read, Seek, SeekFrom};

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// An integer value that fits in `i64`.
    fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            Value::U8(v) => i64::from(v),
            Value::I8(v) => i64::from(v),
            Value::U16(v) => i64::from(v),
            Value::I16(v) => i64::from(v),
            Value::U32(v) => i64::from(v),
            Value::I32(v) => i64::from(v),
            Value::U64(v) => i64::try_from(v).ok()?,
            Value::I64(v) => v,
            _ => return None,
        })
    }

    /// An integer value that fits in `u32`.
    pub fn as_u32(&self) -> Option<u32> {
        self.as_i64().and_then(|v| u32::try_from(v).ok())
    }

    /// An integer value that fits in `i32`.
    pub fn as_i32(&self) -> Option<i32> {
        self.as_i64().and_then(|v| i32::try_from(v).ok())
    }

    /// A float value (f64 narrowed).
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            Value::F32(v) => Some(v),
            Value::F64(v) => Some(v as f32),
            _ => None,
        }
    }

    /// A string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// An array value.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where one tensor lies and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Dimensions, outermost first (a matrix is `[rows, cols]`).
    pub dims: Vec<usize>,
    /// GGML type id (0 = f32, 3 = Q4_1, 8 = Q8_0, …).
    pub ggml_type: u32,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of values.
    pub fn elements(&self) -> usize {
        self.dims.iter().product()
    }
}

/// The parsed header of a GGUF file.
#[derive(Debug, Clone, Default)]
pub struct Content {
    pub metadata: HashMap<String, Value>,
    pub tensors: HashMap<String, TensorInfo>,
    /// Absolute file offset of the data section.
    pub data_offset: u64,
}

/// Largest array or string the reader accepts (a guard against corrupt lengths).
const MAX_LEN: u64 = 1 << 28;

struct Reader<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Reader<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut b = [0u8; N];
        self.inner
            .read_exact(&mut b)
            .map_err(|e| format!("truncated header at byte {}: {e}", self.pos))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, String> {
        self.bytes().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, String> {
        self.bytes().map(u64::from_le_bytes)
    }

    fn len(&mut self, what: &str) -> Result<usize, String> {
        let n = self.u64()?;
        if n > MAX_LEN {
            return Err(format!("{what} length {n} is implausible"));
        }
        usize::try_from(n).map_err(|_| format!("{what} length {n} is too large"))
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.len("string")?;
        let mut b = vec![0u8; n];
        self.inner
            .read_exact(&mut b)
            .map_err(|e| format!("truncated string at byte {}: {e}", self.pos))?;
        self.pos += n as u64;
        String::from_utf8(b).map_err(|_| format!("string at byte {} is not UTF-8", self.pos))
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<Value, String> {
        Ok(match ty {
            0 => Value::U8(u8::from_le_bytes(self.bytes()?)),
            1 => Value::I8(i8::from_le_bytes(self.bytes()?)),
            2 => Value::U16(u16::from_le_bytes(self.bytes()?)),
            3 => Value::I16(i16::from_le_bytes(self.bytes()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.bytes()?)),
            6 => Value::F32(f32::from_le_bytes(self.bytes()?)),
            7 => Value::Bool(self.bytes::<1>()?[0] != 0),
            8 => Value::String(self.string()?),
            9 => {
                if depth > 2 {
                    return Err("arrays nested too deeply".into());
                }
                let elem = self.u32()?;
                let n = self.len("array")?;
                let mut items = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    items.push(self.value(elem, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.bytes()?)),
            12 => Value::F64(f64::from_le_bytes(self.bytes()?)),
            other => return Err(format!("unknown metadata type {other}")),
        })
    }
}

impl Content {
    /// Reads the header from the start of `file`.
    pub fn read<F: Read + Seek>(file: &mut F) -> Result<Self, String> {
        file.seek(SeekFrom::Start(0))
            .map_err(|e| format!("seek: {e}"))?;
        let mut r = Reader {
            inner: BufReader::new(file),
            pos: 0,
        };
        if &r.bytes::<4>()? != b"GGUF" {
            return Err("not a GGUF file (bad magic)".into());
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(format!("GGUF version {version} is not supported (2 or 3)"));
        }
        let n_tensors = r.len("tensor count")?;
        let n_meta = r.len("metadata count")?;
        let mut metadata = HashMap::with_capacity(n_meta.min(1024));
        for _ in 0..n_meta {
            let key = r.string()?;
            let ty = r.u32()?;
            let v = r.value(ty, 0)?;
            metadata.insert(key, v);
        }
        let mut tensors = HashMap::with_capacity(n_tensors.min(4096));
        for _ in 0..n_tensors {
            let name = r.string()?;
            let n_dims = r.u32()?;
            if n_dims > 4 {
                return Err(format!("tensor {name} has {n_dims} dimensions"));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                let d = r.u64()?;
                dims.push(usize::try_from(d).map_err(|_| format!("tensor {name}: dim {d}"))?);
            }
            // Stored innermost first; kept outermost first.
            dims.reverse();
            if dims
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .is_none()
            {
                return Err(format!("tensor {name} is too large"));
            }
            let ggml_type = r.u32()?;
            let offset = r.u64()?;
            tensors.insert(
                name,
                TensorInfo {
                    dims,
                    ggml_type,
                    offset,
                },
            );
        }
        let align = match metadata.get("general.alignment") {
            Some(v) => u64::from(
                v.as_u32()
                    .filter(|&a| a > 0)
                    .ok_or("bad general.alignment")?,
            ),
            None => 32,
        };
        let data_offset = r.pos.div_ceil(align) * align;
        Ok(Self {
            metadata,
            tensors,
            data_offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    fn header() -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend(4u64.to_le_bytes());
        string(&mut b, "llama.block_count");
        b.extend(4u32.to_le_bytes());
        b.extend(30u32.to_le_bytes());
        string(&mut b, "eps");
        b.extend(6u32.to_le_bytes());
        b.extend(1e-5f32.to_le_bytes());
        string(&mut b, "tokens");
        b.extend(9u32.to_le_bytes());
        b.extend(8u32.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        string(&mut b, "a");
        string(&mut b, "bc");
        string(&mut b, "types");
        b.extend(9u32.to_le_bytes());
        b.extend(5u32.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        b.extend(1i32.to_le_bytes());
        b.extend(3i32.to_le_bytes());
        string(&mut b, "w");
        b.extend(2u32.to_le_bytes());
        b.extend(64u64.to_le_bytes());
        b.extend(3u64.to_le_bytes());
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b
    }

    #[test]
    fn reads_metadata_and_tensor_infos() {
        let b = header();
        let c = Content::read(&mut std::io::Cursor::new(&b)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.metadata["llama.block_count"].as_u32(), Some(30));
        assert_eq!(c.metadata["eps"].as_f32(), Some(1e-5));
        let toks: Vec<&str> = c.metadata["tokens"]
            .as_array()
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(toks, ["a", "bc"]);
        assert_eq!(
            c.metadata["types"].as_array().map(|a| a[1].as_i32()),
            Some(Some(3))
        );
        let w = &c.tensors["w"];
        assert_eq!(
            (w.dims.clone(), w.ggml_type, w.elements()),
            (vec![3, 64], 3, 192)
        );
        assert_eq!(c.data_offset % 32, 0);
        assert!(c.data_offset >= b.len() as u64 && c.data_offset < b.len() as u64 + 32);
    }

    #[test]
    fn refuses_malformed_headers() {
        let b = header();
        for cut in [0, 3, 10, 30, b.len() - 1] {
            assert!(
                Content::read(&mut std::io::Cursor::new(&b[..cut])).is_err(),
                "{cut}"
            );
        }
        let mut bad = b.clone();
        bad[0] = b'X';
        assert!(Content::read(&mut std::io::Cursor::new(&bad)).is_err());
        let mut huge = b.clone();
        huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Content::read(&mut std::io::Cursor::new(&huge)).is_err());
    }
}
