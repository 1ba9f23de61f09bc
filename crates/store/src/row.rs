//! Decoding a result row into a struct, one field per column in `SELECT` order, so each
//! query states its columns once and its struct once (no hand-numbered `try_get` lists).

/// Builds `$ty { field, ... }` from `$row` (a `&tokio_postgres::Row`): the n-th listed
/// field takes the n-th column with `try_get` (errors propagate with `?`, so the caller
/// returns `Result<_, StoreError>`). `field => conv` passes the column through `conv`, a
/// function returning `Result<_, StoreError>`.
macro_rules! from_row {
    ($row:expr, $ty:ident { $($field:ident $(=> $conv:expr)?),+ $(,)? }) => {{
        let row: &tokio_postgres::Row = $row;
        let mut column = 0usize;
        $ty {
            $($field: {
                column += 1;
                let value = row.try_get(column - 1)?;
                $(let value = $conv(value)?;)?
                value
            }),+
        }
    }};
}

pub(crate) use from_row;
