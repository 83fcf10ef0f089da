//! Text tables for `tpcm list` and `tpcm image list`: every column as wide as its widest cell
//! (header included) plus three spaces, left-aligned, as docker prints its tables. A TPC name may
//! be 76 characters and an image reference longer still; fixed widths let such a cell push every
//! later column of its row out of line.

use std::io::Write;

/// Renders `header` and `rows` as aligned lines, each ending in a newline. Tabs and line breaks
/// inside a cell would split it, so they are shown as spaces.
pub(super) fn render<S: AsRef<str>>(header: &[&str], rows: &[Vec<S>]) -> String {
    let mut tw = tabwriter::TabWriter::new(Vec::new()).minwidth(0).padding(3);
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let cells: Vec<String> = cells.map(|c| c.replace(['\t', '\n', '\r'], " ")).collect();
        // Writes into memory: cannot fail.
        let _ = writeln!(tw, "{}", cells.join("\t"));
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(AsRef::as_ref));
    }
    let bytes = tw.into_inner().expect("a Vec does not fail to flush");
    String::from_utf8(bytes).expect("cells are UTF-8")
}

#[cfg(test)]
mod tests {
    use super::render;

    /// Where each column starts on every line: the same offsets, whatever the cell lengths.
    fn column_starts(line: &str, cells: &[&str]) -> Vec<usize> {
        let mut from = 0;
        cells
            .iter()
            .map(|c| {
                let at = from + line[from..].find(c).expect("cell on its line");
                from = at + c.len();
                at
            })
            .collect()
    }

    #[test]
    fn a_76_character_name_widens_its_column_instead_of_shifting_the_row() {
        let long = "n".repeat(76);
        let rows = vec![
            vec![long.clone(), "docker.io/acme/app:1".into(), "running".into()],
            vec!["a".into(), "b".into(), "exited (3)".into()],
        ];
        let out = render(&["NAME", "IMAGE", "STATUS"], &rows);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        let header = column_starts(lines[0], &["NAME", "IMAGE", "STATUS"]);
        assert_eq!(header, vec![0, 79, 79 + 20 + 3], "{out}");
        assert_eq!(
            column_starts(lines[1], &[&long, "docker.io/acme/app:1", "running"]),
            header,
            "{out}"
        );
        assert_eq!(
            column_starts(lines[2], &["a", "b", "exited (3)"]),
            header,
            "{out}"
        );
        // No trailing blanks after the last column.
        assert!(lines.iter().all(|l| !l.ends_with(' ')), "{out:?}");
    }

    #[test]
    fn tabs_and_line_breaks_in_a_cell_do_not_split_it() {
        let out = render(&["A", "B"], &[vec!["x\ty", "z\nw"]]);
        assert_eq!(out, "A     B\nx y   z w\n");
    }
}
