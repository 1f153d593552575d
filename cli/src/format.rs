//! `--format`: docker's Go-template output for `inspect`, `ps`, `images`
//! (and any other list command), through the `gotmpl` crate (a port of
//! Go's text/template: sorted map ranges and Go's printing of values, so a
//! docker user's templates print what they print under docker).
//!
//! The words docker gives a format: `table` (the command's default table),
//! `table TEMPLATE` (a header row from the column names, then one row per
//! item, tab-aligned), `json` (one JSON object per line), or a template
//! executed once per item with a newline after each. `\t` and `\n` written
//! as two characters are a tab and a newline, as in docker.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use gotmpl::parse::{Expr, ListNode, Node, Parser, PipeNode};
use gotmpl::{MissingKey, Template, TemplateError, Value};

/// A parsed `--format`: how to print a list of items.
#[derive(Debug)]
pub struct Format {
    template: ParsedTemplate,
    table: bool,
}

/// `gotmpl::Template` is not `Debug`; the source is what a reader wants.
struct ParsedTemplate {
    source: String,
    template: Template,
}

impl std::fmt::Debug for ParsedTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Template").field(&self.source).finish()
    }
}

/// Whether a template may name fields the items do not have. `inspect`
/// prints Go's `<no value>` for them (docker falls back to the raw JSON
/// there); list commands have a fixed set of placeholders, so a misspelt
/// one is an error, as in docker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fields {
    Open,
    Fixed,
}

impl Format {
    /// Parse `--format TEXT`; `default_table` is the command's own table
    /// (what `table` alone, or no `--format`, means). A template that does
    /// not parse is an error here, before anything is printed.
    pub fn parse(text: &str, default_table: &str, fields: Fields) -> anyhow::Result<Self> {
        let trimmed = text.trim();
        let (source, table) = if trimmed.is_empty() || trimmed == "table" {
            (default_table.trim_start_matches("table").to_owned(), true)
        } else if trimmed == "json" {
            ("{{json .}}".to_owned(), false)
        } else if let Some(rest) = text.strip_prefix("table") {
            (rest.to_owned(), true)
        } else {
            (text.to_owned(), false)
        };
        // docker: the template is trimmed of spaces and its escapes
        // expanded, so `table {{.ID}}\t{{.Names}}` works without $'...'.
        let source = source
            .trim_matches(' ')
            .replace("\\t", "\t")
            .replace("\\n", "\n");
        let missing = match fields {
            Fields::Open => MissingKey::Invalid,
            Fields::Fixed => MissingKey::Error,
        };
        let template = compile(&source, missing)
            .map_err(|e| anyhow::anyhow!("template parsing error: {e}"))?;
        Ok(Format {
            template: ParsedTemplate { source, template },
            table,
        })
    }

    /// The whole output for `items`, built before anything is printed so
    /// that a template failing on the third item prints nothing at all.
    /// `header` maps each placeholder to its column title (docker's
    /// `CONTAINER ID` for `.ID`), used for the header row of a table.
    pub fn render(&self, header: &[(&str, &str)], items: &[Value]) -> anyhow::Result<String> {
        let mut out = String::new();
        if self.table {
            let mut titles: BTreeMap<String, Value> = header
                .iter()
                .map(|(field, title)| ((*field).to_owned(), Value::from(*title)))
                .collect();
            // `{{.Label "k"}}` heads its column with LABEL.
            for method in METHODS {
                let title = Value::from(method.to_uppercase());
                titles.insert(
                    (*method).to_owned(),
                    Value::Function(Arc::new(move |_: &[Value]| Ok(title.clone()))),
                );
            }
            // Columns named by the template but without a title are empty
            // in the header, not an error.
            let header_template = compile(&self.template.source, MissingKey::Invalid)
                .context("template parsing error")?;
            out.push_str(
                &header_template
                    .execute_template_to_string(MAIN, &Value::from(titles))
                    .map_err(execution_error)?,
            );
            out.push('\n');
        }
        for item in items {
            out.push_str(
                &self
                    .template
                    .template
                    .execute_template_to_string(MAIN, item)
                    .map_err(execution_error)?,
            );
            out.push('\n');
        }
        Ok(if self.table { align_columns(&out) } else { out })
    }
}

/// The name the checked tree of a format is executed under.
const MAIN: &str = "berth-format";

/// Appended to a template to check where its parse ends (see [`compile`]).
const END_MARKER: &str = "berth: end of the template";

/// Go's built-in template functions, as gotmpl has them.
const GO_FUNCTIONS: &[&str] = &[
    "and", "call", "eq", "ge", "gt", "html", "index", "js", "le", "len", "lt", "ne", "not", "or",
    "print", "printf", "println", "slice", "urlquery",
];

/// What docker adds.
const DOCKER_FUNCTIONS: &[&str] = &[
    "json", "join", "split", "lower", "upper", "title", "pad", "truncate",
];

/// Methods with arguments that docker's list items have (`{{.Label "k"}}`).
/// Go calls methods by name; gotmpl has no methods, so the items carry
/// them as function values and the call is rewritten to `call .Label "k"`.
const METHODS: &[&str] = &["Label"];

/// Parse `source` into a template whose tree is checked (every function it
/// names exists: Go refuses an unknown one at parse time, gotmpl only when
/// it runs) and has method calls rewritten; execute it as [`MAIN`].
fn compile(source: &str, missing: MissingKey) -> gotmpl::Result<Template> {
    let template = with_docker_functions(Template::new("").missing_key(missing)).parse(source)?;
    // gotmpl's parser stops quietly at a stray top-level {{end}} or
    // {{else}} and at the end of an unclosed block, where Go's refuses the
    // template. A marker action after the template shows both: it must come
    // out as the last node of the top level.
    let probe = format!("{source}{{{{`{END_MARKER}`}}}}");
    let (mut tree, _) = Parser::new(&probe, "{{", "}}")?.parse()?;
    let ends_with_marker = matches!(
        tree.nodes.last(),
        Some(Node::Action(action)) if matches!(
            action.pipe.commands.as_slice(),
            [command] if matches!(command.args.as_slice(), [Expr::String(_, text)] if &**text == END_MARKER)
        )
    );
    if !ends_with_marker {
        return Err(TemplateError::Exec(
            "template: unexpected {{end}} or {{else}}, or a block without its {{end}}".into(),
        ));
    }
    tree.nodes.pop();
    check_list(&mut tree)?;
    Ok(template.add_parse_tree(MAIN, tree))
}

fn check_list(list: &mut ListNode) -> gotmpl::Result<()> {
    list.nodes.iter_mut().try_for_each(check_node)
}

fn check_node(node: &mut Node) -> gotmpl::Result<()> {
    match node {
        Node::List(list) => check_list(list),
        Node::Action(action) => check_pipe(&mut action.pipe),
        Node::If(branch) | Node::Range(branch) | Node::With(branch) => {
            check_pipe(&mut branch.pipe)?;
            check_list(&mut branch.body)?;
            branch.else_body.as_mut().map_or(Ok(()), check_list)
        }
        Node::Template(call) => call.pipe.as_mut().map_or(Ok(()), check_pipe),
        Node::Define(define) => check_list(&mut define.body),
        Node::Text(_) | Node::Break(_) | Node::Continue(_) => Ok(()),
    }
}

fn check_pipe(pipe: &mut PipeNode) -> gotmpl::Result<()> {
    for command in &mut pipe.commands {
        if let [Expr::Field(pos, path), _, ..] = command.args.as_slice() {
            if path
                .last()
                .is_some_and(|name| METHODS.contains(&name.as_str()))
            {
                let pos = *pos;
                command.args.insert(0, Expr::Identifier(pos, "call".into()));
            }
        }
        command.args.iter_mut().try_for_each(check_expr)?;
    }
    Ok(())
}

fn check_expr(expr: &mut Expr) -> gotmpl::Result<()> {
    match expr {
        Expr::Identifier(pos, name)
            if !GO_FUNCTIONS.contains(&name.as_str())
                && !DOCKER_FUNCTIONS.contains(&name.as_str()) =>
        {
            Err(TemplateError::Exec(format!(
                "template: :{}: function {:?} not defined",
                pos.line,
                name.as_str()
            )))
        }
        Expr::Pipe(_, pipe) => check_pipe(pipe),
        Expr::Chain(_, inner, _) => check_expr(inner),
        _ => Ok(()),
    }
}

/// Give a list item docker's `.Label "KEY"` method over `labels`.
pub fn with_label_method(item: Value, labels: BTreeMap<String, String>) -> Value {
    let Value::Map(map) = item else {
        return item;
    };
    let mut map = (*map).clone();
    let method = move |args: &[Value]| -> gotmpl::Result<Value> {
        match args {
            [key] => Ok(Value::from(
                labels.get(&key.to_string()).cloned().unwrap_or_default(),
            )),
            _ => Err(TemplateError::Exec("Label takes one label name".into())),
        }
    };
    map.insert(Arc::from("Label"), Value::Function(Arc::new(method)));
    Value::from(map)
}

fn execution_error(error: TemplateError) -> anyhow::Error {
    anyhow::anyhow!("cannot format the output: {error}")
}

/// docker's template functions beside Go's own (`json`, `join`, `split`,
/// `lower`, `upper`, `title`, `pad`, `truncate`).
fn with_docker_functions(template: Template) -> Template {
    template
        .func("json", |args| {
            let value = args.first().map(from_value).unwrap_or_default();
            Ok(Value::from(go_json(&value)))
        })
        .func("join", |args| match args {
            [Value::List(items), sep] => Ok(Value::from(
                items
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join(&sep.to_string()),
            )),
            _ => Err(TemplateError::Exec(
                "join takes a list and a separator".into(),
            )),
        })
        .func("split", |args| match args {
            [text, sep] => Ok(Value::from(
                text.to_string()
                    .split(sep.to_string().as_str())
                    .map(Value::from)
                    .collect::<Vec<_>>(),
            )),
            _ => Err(TemplateError::Exec(
                "split takes a text and a separator".into(),
            )),
        })
        .func("lower", |args| {
            one_text(args, "lower").map(|t| t.to_lowercase().into())
        })
        .func("upper", |args| {
            one_text(args, "upper").map(|t| t.to_uppercase().into())
        })
        .func("title", |args| {
            one_text(args, "title").map(|t| {
                let mut at_word_start = true;
                let titled: String = t
                    .chars()
                    .map(|c| {
                        let out = if at_word_start {
                            c.to_uppercase().next().unwrap_or(c)
                        } else {
                            c
                        };
                        at_word_start = c.is_whitespace();
                        out
                    })
                    .collect();
                titled.into()
            })
        })
        .func("pad", |args| match args {
            [text, before, after] => {
                let count = |v: &Value| usize::try_from(v.as_int().unwrap_or(0)).unwrap_or(0);
                Ok(Value::from(format!(
                    "{}{text}{}",
                    " ".repeat(count(before)),
                    " ".repeat(count(after))
                )))
            }
            _ => Err(TemplateError::Exec(
                "pad takes a text and two counts".into(),
            )),
        })
        .func("truncate", |args| match args {
            [text, length] => {
                let length = usize::try_from(length.as_int().unwrap_or(0)).unwrap_or(0);
                Ok(Value::from(
                    text.to_string().chars().take(length).collect::<String>(),
                ))
            }
            _ => Err(TemplateError::Exec(
                "truncate takes a text and a length".into(),
            )),
        })
}

fn one_text(args: &[Value], name: &str) -> gotmpl::Result<String> {
    match args {
        [text] => Ok(text.to_string()),
        _ => Err(TemplateError::Exec(format!("{name} takes one argument"))),
    }
}

/// JSON as Go's `json.Marshal` writes it (docker's `json` function):
/// compact, with `<`, `>` and `&` escaped.
fn go_json(value: &serde_json::Value) -> String {
    let text = serde_json::to_string(value).unwrap_or_default();
    // These characters can only occur inside JSON strings, where the
    // escape means the same character.
    text.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// A JSON value as template data.
pub fn to_value(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::Uint(u)
            } else {
                Value::Float(n.as_f64().unwrap_or_default())
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => {
            Value::from(items.iter().map(to_value).collect::<Vec<_>>())
        }
        serde_json::Value::Object(map) => Value::from(
            map.iter()
                .map(|(k, v)| (Arc::<str>::from(k.as_str()), to_value(v)))
                .collect::<BTreeMap<_, _>>(),
        ),
    }
}

/// Template data back as JSON (for the `json` function).
fn from_value(value: &Value) -> serde_json::Value {
    match value {
        Value::Nil => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Int(i) => (*i).into(),
        Value::Uint(u) => (*u).into(),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        Value::String(s) => serde_json::Value::String(s.to_string()),
        Value::List(items) => items.iter().map(from_value).collect(),
        Value::Map(map) => serde_json::Value::Object(
            map.iter()
                // Methods are not data.
                .filter(|(_, v)| !matches!(v, Value::Function(_)))
                .map(|(k, v)| (k.to_string(), from_value(v)))
                .collect(),
        ),
        Value::Function(_) => serde_json::Value::Null,
    }
}

/// Go's `tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)` as docker uses it
/// for tables: each tab-terminated cell is padded to its column's widest
/// cell plus three spaces, at least ten characters; the last cell of a
/// line is written as it is.
pub fn align_columns(text: &str) -> String {
    const MIN_WIDTH: usize = 10;
    const PADDING: usize = 3;
    let lines: Vec<Vec<&str>> = text
        .split_inclusive('\n')
        .map(|line| line.split('\t').collect())
        .collect();
    let mut widths: Vec<usize> = Vec::new();
    for cells in &lines {
        for (column, cell) in cells.iter().enumerate().take(cells.len() - 1) {
            let width = (cell.chars().count() + PADDING).max(MIN_WIDTH);
            match widths.get_mut(column) {
                Some(w) => *w = (*w).max(width),
                None => widths.push(width),
            }
        }
    }
    let mut out = String::with_capacity(text.len());
    for cells in &lines {
        let last = cells.len() - 1;
        for (column, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if column < last {
                let pad = widths[column] - cell.chars().count();
                out.push_str(&" ".repeat(pad));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render_one(template: &str, item: serde_json::Value) -> String {
        Format::parse(template, "", Fields::Open)
            .unwrap()
            .render(&[], &[to_value(&item)])
            .unwrap()
    }

    fn inspected() -> serde_json::Value {
        json!({
            "Name": "/web",
            "State": {"Status": "running", "Pid": 42},
            "Config": {
                "Env": ["PATH=/bin", "A=<b>&"],
                "Labels": {"k": "v", "a": "1"},
                "Cmd": ["sh"]
            }
        })
    }

    /// Templates from docker's documentation of `inspect --format`.
    #[test]
    fn docker_documented_templates() {
        let item = inspected();
        assert_eq!(
            render_one("{{.Name}} {{.State.Status}}", item.clone()),
            "/web running\n"
        );
        assert_eq!(
            render_one("{{json .Config.Env}}", item.clone()),
            "[\"PATH=/bin\",\"A=\\u003cb\\u003e\\u0026\"]\n"
        );
        assert_eq!(
            render_one("{{range .Config.Env}}{{println .}}{{end}}", item.clone()),
            "PATH=/bin\nA=<b>&\n\n"
        );
        assert_eq!(
            render_one(r#"{{index .Config.Labels "k"}}"#, item.clone()),
            "v\n"
        );
        // Maps range in key order, as Go's do.
        assert_eq!(
            render_one(
                "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}},{{end}}",
                item.clone()
            ),
            "a=1,k=v,\n"
        );
        assert_eq!(render_one("{{.State.Pid}}", item.clone()), "42\n");
        assert_eq!(
            render_one(
                r#"{{if eq .State.Status "running"}}up{{else}}down{{end}}"#,
                item.clone()
            ),
            "up\n"
        );
        assert_eq!(
            render_one("{{json .State}}", item.clone()),
            "{\"Pid\":42,\"Status\":\"running\"}\n"
        );
        assert_eq!(
            render_one("{{upper .State.Status}} {{join .Config.Cmd \",\"}}", item),
            "RUNNING sh\n"
        );
    }

    #[test]
    fn tables_have_a_header_and_aligned_columns() {
        let format = Format::parse(r"table {{.ID}}\t{{.Status}}", "", Fields::Fixed).unwrap();
        let out = format
            .render(
                &[("ID", "CONTAINER ID"), ("Status", "STATUS")],
                &[
                    to_value(&json!({"ID": "abc", "Status": "Up 2 seconds"})),
                    to_value(&json!({"ID": "0123456789abcdef", "Status": "Exited (0)"})),
                ],
            )
            .unwrap();
        assert_eq!(
            out,
            "CONTAINER ID       STATUS\n\
             abc                Up 2 seconds\n\
             0123456789abcdef   Exited (0)\n"
        );
    }

    #[test]
    fn short_columns_are_ten_wide() {
        assert_eq!(align_columns("A\tB\nxy\tz\n"), "A         B\nxy        z\n");
    }

    #[test]
    fn json_word_prints_each_item_as_json() {
        let format = Format::parse("json", "", Fields::Fixed).unwrap();
        let out = format
            .render(&[], &[to_value(&json!({"B": 1, "A": "x"}))])
            .unwrap();
        assert_eq!(out, "{\"A\":\"x\",\"B\":1}\n");
    }

    #[test]
    fn bad_templates_are_one_line_errors() {
        for bad in [
            "{{.Name",
            "{{nosuchfunction .}}",
            "{{if .X}}",
            "{{range .X}}",
            "{{end}}",
            "a{{else}}b",
            "{{.A | }}",
        ] {
            let Err(error) = Format::parse(bad, "", Fields::Open) else {
                panic!("{bad} parsed");
            };
            let line = crate::exit::one_line(&error);
            assert!(line.starts_with("template parsing error"), "{bad}: {line}");
            assert!(!line.contains('\n'));
        }
    }

    #[test]
    fn label_method_as_docker_has_it() {
        let labels = BTreeMap::from([("com.example.team".to_owned(), "web".to_owned())]);
        let item = with_label_method(to_value(&json!({"ID": "abc"})), labels);
        let format = Format::parse(
            r#"{{.ID}} {{.Label "com.example.team"}} [{{.Label "none"}}] {{json .}}"#,
            "",
            Fields::Fixed,
        )
        .unwrap();
        assert_eq!(
            format.render(&[], &[item]).unwrap(),
            "abc web [] {\"ID\":\"abc\"}\n"
        );
    }

    #[test]
    fn fixed_fields_refuse_unknown_placeholders() {
        let format = Format::parse("{{.Nmae}}", "", Fields::Fixed).unwrap();
        let error = format
            .render(&[], &[to_value(&json!({"Name": "x"}))])
            .unwrap_err();
        assert!(error.to_string().contains("Nmae"), "{error}");
        // The same template is fine where fields are open (inspect).
        let format = Format::parse("{{.Nmae}}", "", Fields::Open).unwrap();
        assert!(format
            .render(&[], &[to_value(&json!({"Name": "x"}))])
            .is_ok());
    }
}
