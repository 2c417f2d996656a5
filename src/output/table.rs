//! The one way kordon draws a table for people: a header row, then one row per item,
//! columns left-aligned and two spaces apart, no borders, as `kubectl get` prints.
//! comfy-table does the measuring (by display width, not bytes, so a node or pod name
//! in any script lines up); it is built without its terminal feature, so a table never
//! carries colour or other escape codes, and no line ends in spaces.
use comfy_table::{Cell, ContentArrangement, Table, presets};

/// Between two columns.
const GAP: u16 = 2;

/// `header` and `rows` as aligned text, one line each, without a final newline.
pub fn plain<R>(header: &[&str], rows: impl IntoIterator<Item = R>) -> String
where
    R: IntoIterator<Item = String>,
{
    let mut table = Table::new();
    table.load_style(presets::NOTHING);
    // Never wrap or cut a cell: a name must stay whole and greppable.
    table.set_content_arrangement(ContentArrangement::Disabled);
    table.set_header(header.iter().map(Cell::new));
    for row in rows {
        table.add_row(row.into_iter().map(Cell::new));
    }
    let last = header.len().saturating_sub(1);
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if i < last { GAP } else { 0 }));
    }
    table.trim_fmt()
}

#[cfg(test)]
mod tests {
    use super::plain;

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn columns_line_up_two_spaces_apart_without_trailing_spaces() {
        let text = plain(
            &["NODE", "RESULT", "BLOCKERS"],
            [
                row(&["node-1", "done", "-"]),
                row(&["n2", "not started", ""]),
            ],
        );
        assert_eq!(
            text,
            "NODE    RESULT       BLOCKERS\n\
             node-1  done         -\n\
             n2      not started"
        );
    }

    #[test]
    fn width_is_counted_in_characters_not_bytes() {
        let text = plain(&["A", "B"], [row(&["äöü", "x"]), row(&["abcd", "y"])]);
        assert_eq!(text, "A     B\näöü   x\nabcd  y");
    }

    #[test]
    fn a_long_cell_is_neither_wrapped_nor_cut() {
        let long = "a".repeat(300);
        let text = plain(&["X", "Y"], [row(&[&long, "end"])]);
        assert_eq!(text.lines().nth(1), Some(format!("{long}  end").as_str()));
    }

    #[test]
    fn no_escape_codes() {
        let text = plain(&["X"], [row(&["y"])]);
        assert!(!text.contains('\u{1b}'), "{text:?}");
    }
}
