//! The Django user tables wxauth knows, how a table is recognised as one of them, and how
//! `--map FIELD=COLUMN` changes which column fills which field of a person.

use std::fmt;

/// A field of a wxauth person that a source column can fill.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    /// The source row's primary key: the order rows are read in, and how reports name rows.
    Key,
    /// The openid (required).
    OpenId,
    /// Nickname.
    Nickname,
    /// Avatar: an http(s) URL, or a path under Django's MEDIA_URL.
    AvatarUrl,
    /// Gender: "male"/"female", 1/2, 男/女.
    Gender,
    /// City.
    City,
    /// Province.
    Province,
    /// Country.
    Country,
    /// Language, e.g. "zh_CN".
    Language,
    /// A mainland China mobile number.
    Phone,
    /// When the account was made (Django's `date_joined`).
    CreatedAt,
    /// One key of the person's `extra` JSON object.
    Extra(String),
}

/// The names `--map` accepts, for messages.
pub const FIELD_NAMES: &str = "key, openid, nickname, avatar_url, gender, city, province, \
                               country, language, phone, created_at, extra.NAME";

impl Field {
    /// The field named `name` (as `--map` spells it).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "key" => Self::Key,
            "openid" => Self::OpenId,
            "nickname" => Self::Nickname,
            "avatar_url" => Self::AvatarUrl,
            "gender" => Self::Gender,
            "city" => Self::City,
            "province" => Self::Province,
            "country" => Self::Country,
            "language" => Self::Language,
            "phone" => Self::Phone,
            "created_at" => Self::CreatedAt,
            _ => {
                let key = name.strip_prefix("extra.")?;
                if key.is_empty() {
                    return None;
                }
                Self::Extra(key.to_owned())
            }
        })
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Key => "key",
            Self::OpenId => "openid",
            Self::Nickname => "nickname",
            Self::AvatarUrl => "avatar_url",
            Self::Gender => "gender",
            Self::City => "city",
            Self::Province => "province",
            Self::Country => "country",
            Self::Language => "language",
            Self::Phone => "phone",
            Self::CreatedAt => "created_at",
            Self::Extra(key) => return write!(f, "extra.{key}"),
        };
        f.write_str(name)
    }
}

/// One kind of Django user table.
#[derive(Debug)]
pub struct Layout {
    /// What it is, for messages.
    pub model: &'static str,
    /// The table Django makes for it in the tutorials, when the app's name is known.
    pub default_table: Option<&'static str>,
    /// Columns a table must have to be taken for this layout.
    signature: &'static [&'static str],
    /// Field ← column, used when the table has the column.
    columns: &'static [(&'static str, &'static str)],
}

/// The layouts, most specific first.
pub const LAYOUTS: &[Layout] = &[
    Layout {
        model: "a User model extending AbstractUser, the openid as username",
        default_table: None,
        signature: &["username", "password", "nickname", "user_avatar"],
        columns: &[
            ("key", "id"),
            ("openid", "username"),
            ("nickname", "nickname"),
            ("avatar_url", "user_avatar"),
            ("gender", "user_sex"),
            ("phone", "user_phone"),
            ("created_at", "date_joined"),
        ],
    },
    Layout {
        model: "the Wxuser model",
        default_table: Some("app01_wxuser"),
        signature: &["openid", "name"],
        columns: &[
            ("key", "id"),
            ("openid", "openid"),
            ("nickname", "name"),
            ("avatar_url", "avatar"),
            ("gender", "gender"),
            ("city", "city"),
            ("province", "province"),
            ("country", "country"),
            ("language", "language"),
            ("created_at", "creat_time"),
        ],
    },
    Layout {
        model: "a User model with open_id and nickname",
        default_table: Some("authorization_user"),
        signature: &["open_id", "nickname"],
        columns: &[
            ("key", "id"),
            ("openid", "open_id"),
            ("nickname", "nickname"),
        ],
    },
];

/// The layout a table with these columns has, if any.
pub fn recognise(columns: &[String]) -> Option<&'static Layout> {
    LAYOUTS.iter().find(|layout| {
        layout
            .signature
            .iter()
            .all(|wanted| find_column(columns, wanted).is_some())
    })
}

/// The table's own spelling of a column (MySQL column names ignore case).
fn find_column<'a>(columns: &'a [String], wanted: &str) -> Option<&'a String> {
    columns
        .iter()
        .find(|c| c.as_str() == wanted)
        .or_else(|| columns.iter().find(|c| c.eq_ignore_ascii_case(wanted)))
}

/// One `--map` entry: a field and its column, or `None` to leave the field out.
pub type Override = (Field, Option<String>);

/// Parses `--map` entries (`FIELD=COLUMN`, or `FIELD=` to leave a field out).
pub fn parse_overrides(entries: &[String]) -> Result<Vec<Override>, String> {
    let mut out: Vec<Override> = Vec::new();
    for entry in entries {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let Some((field, column)) = entry.split_once('=') else {
            return Err(format!(
                "--map {entry:?} must be FIELD=COLUMN, e.g. --map openid=open_id,nickname=name"
            ));
        };
        let field = Field::parse(field.trim()).ok_or_else(|| {
            format!(
                "--map {entry:?}: unknown field {:?} (fields: {FIELD_NAMES})",
                field.trim()
            )
        })?;
        if out.iter().any(|(f, _)| *f == field) {
            return Err(format!("--map names the field {field} twice"));
        }
        let column = column.trim();
        out.push((field, (!column.is_empty()).then(|| column.to_owned())));
    }
    Ok(out)
}

/// Which column fills which field, in the order the columns are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// Field ← column of the source table.
    pub columns: Vec<(Field, String)>,
}

impl Mapping {
    /// The layout's columns that the table has, changed by the overrides. Names a column the
    /// table lacks, and insists on an openid.
    pub fn resolve(
        layout: Option<&Layout>,
        table: &str,
        table_columns: &[String],
        overrides: &[Override],
    ) -> Result<Self, String> {
        let mut columns: Vec<(Field, String)> = Vec::new();
        for (field, column) in layout.map(|l| l.columns).unwrap_or_default() {
            if let (Some(field), Some(column)) =
                (Field::parse(field), find_column(table_columns, column))
            {
                columns.push((field, column.clone()));
            }
        }
        for (field, column) in overrides {
            columns.retain(|(f, _)| f != field);
            let Some(column) = column else { continue };
            let Some(found) = find_column(table_columns, column) else {
                return Err(format!(
                    "--map {field}={column}: the table {table} has no column {column:?} \
                     (its columns: {})",
                    table_columns.join(", ")
                ));
            };
            columns.push((field.clone(), found.clone()));
        }
        // Django gives every model an `id`: the key, unless said otherwise.
        let key_given = overrides.iter().any(|(f, _)| *f == Field::Key);
        if !key_given && !columns.iter().any(|(f, _)| *f == Field::Key) {
            if let Some(id) = find_column(table_columns, "id") {
                columns.insert(0, (Field::Key, id.clone()));
            }
        }
        if !columns.iter().any(|(f, _)| *f == Field::OpenId) {
            return Err(format!(
                "no column of {table} is mapped to the openid: give --map openid=COLUMN \
                 (its columns: {})",
                table_columns.join(", ")
            ));
        }
        Ok(Self { columns })
    }

    /// Where a field is among the columns read.
    pub fn position(&self, field: &Field) -> Option<usize> {
        self.columns.iter().position(|(f, _)| f == field)
    }

    /// The column holding the source key, if any.
    pub fn key_column(&self) -> Option<&str> {
        self.position(&Field::Key)
            .map(|i| self.columns[i].1.as_str())
    }
}

impl fmt::Display for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .columns
            .iter()
            .map(|(field, column)| format!("{field}={column}"))
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn each_tutorial_table_is_recognised_by_its_columns() {
        let wxuser = names(&["id", "openid", "name", "avatar", "language", "city"]);
        assert_eq!(
            recognise(&wxuser).unwrap().default_table,
            Some("app01_wxuser")
        );
        let abstract_user = names(&[
            "id",
            "password",
            "username",
            "nickname",
            "user_avatar",
            "user_phone",
        ]);
        assert!(
            recognise(&abstract_user)
                .unwrap()
                .model
                .contains("AbstractUser")
        );
        let open_id = names(&["id", "open_id", "nickname"]);
        assert_eq!(
            recognise(&open_id).unwrap().default_table,
            Some("authorization_user")
        );
        assert!(recognise(&names(&["id", "app", "name", "applied"])).is_none());
    }

    #[test]
    fn a_layout_maps_only_the_columns_the_table_has() {
        let columns = names(&["id", "openid", "name", "avatar"]);
        let mapping = Mapping::resolve(recognise(&columns), "app01_wxuser", &columns, &[]).unwrap();
        assert_eq!(
            mapping.to_string(),
            "key=id,openid=openid,nickname=name,avatar_url=avatar"
        );
    }

    #[test]
    fn map_entries_replace_add_and_drop_fields() {
        let columns = names(&["ID", "wx_openid", "nick", "name", "avatar"]);
        let overrides = parse_overrides(&names(&[
            "openid=wx_openid",
            "nickname=nick",
            "avatar_url=",
            "extra.old_name=name",
        ]))
        .unwrap();
        let mapping =
            Mapping::resolve(recognise(&columns), "members", &columns, &overrides).unwrap();
        assert_eq!(
            mapping.to_string(),
            "key=ID,openid=wx_openid,nickname=nick,extra.old_name=name"
        );
    }

    #[test]
    fn a_map_entry_naming_a_missing_column_lists_the_columns() {
        let columns = names(&["id", "open_id", "nickname"]);
        let overrides = parse_overrides(&names(&["nickname=nick_name"])).unwrap();
        let err = Mapping::resolve(None, "authorization_user", &columns, &overrides).unwrap_err();
        assert_eq!(
            err,
            "--map nickname=nick_name: the table authorization_user has no column \
             \"nick_name\" (its columns: id, open_id, nickname)"
        );
    }

    #[test]
    fn a_table_without_an_openid_mapping_is_refused() {
        let columns = names(&["id", "nick"]);
        let err = Mapping::resolve(None, "members", &columns, &[]).unwrap_err();
        assert!(err.contains("--map openid=COLUMN"), "{err}");
    }

    #[test]
    fn bad_map_entries_are_explained() {
        let err = parse_overrides(&names(&["openid"])).unwrap_err();
        assert!(err.contains("FIELD=COLUMN"), "{err}");
        let err = parse_overrides(&names(&["nick=name"])).unwrap_err();
        assert!(err.contains("unknown field \"nick\""), "{err}");
        assert!(err.contains(FIELD_NAMES), "{err}");
        let err = parse_overrides(&names(&["openid=a", "openid=b"])).unwrap_err();
        assert!(err.contains("twice"), "{err}");
        assert!(parse_overrides(&names(&["extra.=x"])).is_err());
    }
}
