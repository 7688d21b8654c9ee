//! One source row checked and turned into a person, or rejected with a reason.
//!
//! Limits are those of wxauth's columns (the MySQL migration's VARCHAR sizes, in characters):
//! a value over one makes the row invalid rather than cut. Django writes `''` for a blank
//! field, so empty text is "not given". A phone that is not a mainland China mobile number,
//! an avatar that is not a URL, an unknown gender or an unreadable date only lose that value:
//! the person is imported and a warning says what was dropped.

use url::Url;
use wxauth_wechat::OpenId;

use super::layout::{Field, Mapping};

const NICKNAME_MAX: usize = 255;
const AVATAR_URL_MAX: usize = 1024;
const PLACE_MAX: usize = 255;
const LANGUAGE_MAX: usize = 64;
const EXTRA_MAX_BYTES: usize = 4096;
const OPENID_MAX: usize = 128;

/// A person to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// The openid in the app imported into.
    pub openid: String,
    /// Nickname.
    pub nickname: Option<String>,
    /// Avatar URL.
    pub avatar_url: Option<String>,
    /// 0 unknown, 1 male, 2 female.
    pub gender: i64,
    /// City.
    pub city: Option<String>,
    /// Province.
    pub province: Option<String>,
    /// Country.
    pub country: Option<String>,
    /// Language.
    pub language: Option<String>,
    /// Country code and number.
    pub phone: Option<(String, String)>,
    /// When the account was made (Unix seconds), when the source says.
    pub created_at: Option<i64>,
    /// The `extra` JSON object, as text.
    pub extra: Option<String>,
}

/// A row that can be imported, and what was dropped from it.
#[derive(Debug)]
pub struct Checked {
    /// The person.
    pub person: Person,
    /// Values left out, with the reason.
    pub warnings: Vec<String>,
}

/// Turns one row (the mapped columns' values, in the mapping's order) into a person.
/// `Err` says why the row cannot be imported.
pub fn check(
    values: &[Option<String>],
    mapping: &Mapping,
    media_url: Option<&Url>,
) -> Result<Checked, String> {
    let mut warnings = Vec::new();
    let value = |field: &Field| -> Result<Option<&str>, String> {
        let Some(text) = mapping.position(field).and_then(|i| values[i].as_deref()) else {
            return Ok(None);
        };
        if text.contains('\0') {
            return Err(format!("{field} contains a NUL character"));
        }
        Ok((!text.trim().is_empty()).then_some(text))
    };
    let text = |field: &Field, max: usize| -> Result<Option<String>, String> {
        let Some(text) = value(field)? else {
            return Ok(None);
        };
        let length = text.chars().count();
        if length > max {
            return Err(format!(
                "{field} is {length} characters long (at most {max})"
            ));
        }
        Ok(Some(text.to_owned()))
    };

    let openid = match value(&Field::OpenId)? {
        None => return Err("openid is empty".to_owned()),
        Some(openid) => check_openid(openid)?,
    };
    let nickname = text(&Field::Nickname, NICKNAME_MAX)?;
    let city = text(&Field::City, PLACE_MAX)?;
    let province = text(&Field::Province, PLACE_MAX)?;
    let country = text(&Field::Country, PLACE_MAX)?;
    let language = text(&Field::Language, LANGUAGE_MAX)?;

    let avatar_url = match value(&Field::AvatarUrl)? {
        None => None,
        Some(avatar) => match avatar_url(avatar, media_url) {
            Some(url) if url.chars().count() > AVATAR_URL_MAX => {
                return Err(format!(
                    "avatar_url is {} characters long (at most {AVATAR_URL_MAX})",
                    url.chars().count()
                ));
            }
            Some(url) => Some(url),
            None => {
                warnings.push(
                    "the avatar is a file path, not an http(s) URL: imported without it \
                     (--media-url makes such paths URLs)"
                        .to_owned(),
                );
                None
            }
        },
    };

    let gender = match value(&Field::Gender)? {
        None => 0,
        Some(given) => gender(given).unwrap_or_else(|| {
            warnings.push(format!(
                "gender {:?} is not male or female: imported as unknown",
                given.chars().take(16).collect::<String>()
            ));
            0
        }),
    };

    let phone = match value(&Field::Phone)? {
        None => None,
        Some(given) => {
            let phone = mainland_mobile(given);
            if phone.is_none() {
                warnings.push(format!(
                    "phone {} is not a mainland China mobile number (11 digits): imported \
                     without a phone",
                    mask(&given.chars().take(32).collect::<String>())
                ));
            }
            phone.map(|number| ("86".to_owned(), number))
        }
    };

    let created_at = match value(&Field::CreatedAt)? {
        None => None,
        Some(given) => {
            let parsed = unix_seconds(given);
            if parsed.is_none() {
                warnings.push(format!(
                    "created_at {:?} is not a date and time: the import time is used",
                    given.chars().take(40).collect::<String>()
                ));
            }
            parsed
        }
    };

    let mut extra = serde_json::Map::new();
    for (field, _) in &mapping.columns {
        if let Field::Extra(key) = field
            && let Some(given) = value(field)?
        {
            extra.insert(key.clone(), serde_json::Value::String(given.to_owned()));
        }
    }
    let extra = if extra.is_empty() {
        None
    } else {
        let text = serde_json::Value::Object(extra).to_string();
        if text.len() > EXTRA_MAX_BYTES {
            return Err(format!(
                "the extra fields are {} bytes of JSON (at most {EXTRA_MAX_BYTES})",
                text.len()
            ));
        }
        Some(text)
    };

    Ok(Checked {
        person: Person {
            openid,
            nickname,
            avatar_url,
            gender,
            city,
            province,
            country,
            language,
            phone,
            created_at,
            extra,
        },
        warnings,
    })
}

fn check_openid(openid: &str) -> Result<String, String> {
    let length = openid.chars().count();
    if length > OPENID_MAX {
        return Err(format!(
            "openid is {length} characters long (at most {OPENID_MAX})"
        ));
    }
    OpenId::parse(openid)
        .map(OpenId::into_string)
        .map_err(|err| err.to_string())
}

/// An http(s) URL as it is, or a path under `media_url` (Django's ImageField keeps paths like
/// `image/2020/01/01/a.png`).
fn avatar_url(avatar: &str, media_url: Option<&Url>) -> Option<String> {
    if let Ok(url) = Url::parse(avatar) {
        return matches!(url.scheme(), "http" | "https").then(|| avatar.to_owned());
    }
    let base = media_url?;
    base.join(avatar.trim_start_matches('/'))
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https"))
        .map(String::from)
}

/// Django's `user_sex` choices (`male`/`female`), WeChat's 1/2, or 男/女.
fn gender(given: &str) -> Option<i64> {
    match given.trim().to_ascii_lowercase().as_str() {
        "male" | "m" | "1" | "男" => Some(1),
        "female" | "f" | "2" | "女" => Some(2),
        "0" | "unknown" | "未知" => Some(0),
        _ => None,
    }
}

/// An 11-digit mainland China mobile number (1, then 3 to 9, then 9 digits), with or without
/// +86 / 0086 / 86 before it and spaces or dashes inside.
fn mainland_mobile(given: &str) -> Option<String> {
    let compact: String = given.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    let number = ["+86", "0086", "86"]
        .iter()
        .find_map(|prefix| compact.strip_prefix(prefix).filter(|rest| rest.len() == 11))
        .unwrap_or(&compact);
    let bytes = number.as_bytes();
    let ok = bytes.len() == 11
        && bytes.iter().all(u8::is_ascii_digit)
        && bytes[0] == b'1'
        && (b'3'..=b'9').contains(&bytes[1]);
    ok.then(|| number.to_owned())
}

/// Seconds since 1970 from Django's date and time text: `YYYY-MM-DD[ T]HH:MM:SS[.ffffff]`
/// with an optional `Z`, `+HH`, `+HHMM` or `+HH:MM` (none means UTC, as Django stores it), or
/// a date alone, or Unix seconds.
fn unix_seconds(given: &str) -> Option<i64> {
    let given = given.trim();
    if let Ok(seconds) = given.parse::<i64>() {
        return Some(seconds);
    }
    let number = |s: &str| -> Option<i64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (date, time) = match given.find([' ', 'T']) {
        Some(i) => (&given[..i], given[i + 1..].trim()),
        None => (given, "00:00:00"),
    };
    let mut parts = date.splitn(3, '-');
    let year = number(parts.next()?)?;
    let month = number(parts.next()?)?;
    let day = number(parts.next()?)?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (clock, offset) = match time.find(['Z', 'z', '+', '-']) {
        Some(i) => (&time[..i], zone_offset(&time[i..])?),
        None => (time, 0),
    };
    let clock = clock.split('.').next()?;
    let mut parts = clock.splitn(3, ':');
    let hour = number(parts.next()?)?;
    let minute = number(parts.next()?)?;
    let second = parts.next().map_or(Some(0), number)?;
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// `Z`, `+08`, `+0800` or `+08:00` as seconds east of UTC.
fn zone_offset(zone: &str) -> Option<i64> {
    if zone.eq_ignore_ascii_case("z") {
        return Some(0);
    }
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let digits: String = zone[1..].chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (hours, minutes) = match digits.len() {
        2 => (digits.parse::<i64>().ok()?, 0),
        4 => (
            digits[..2].parse::<i64>().ok()?,
            digits[2..].parse::<i64>().ok()?,
        ),
        _ => return None,
    };
    Some(sign * (hours * 3600 + minutes * 60))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// `2025550100` → `202***0100`: enough to find the row, not the number.
fn mask(number: &str) -> String {
    let chars: Vec<char> = number.chars().collect();
    let n = chars.len();
    let (head, tail) = match n {
        0..=2 => (0, 0),
        3..=6 => (1, 1),
        _ => (3, 4),
    };
    let mut out: String = chars[..head].iter().collect();
    out.push_str(&"*".repeat(n - head - tail));
    out.extend(&chars[n - tail..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(fields: &[(&str, &str)]) -> Mapping {
        Mapping {
            columns: fields
                .iter()
                .map(|(f, c)| (Field::parse(f).unwrap(), (*c).to_owned()))
                .collect(),
        }
    }

    fn row(values: &[Option<&str>]) -> Vec<Option<String>> {
        values.iter().map(|v| v.map(str::to_owned)).collect()
    }

    #[test]
    fn a_full_row_becomes_a_person_and_blank_fields_are_left_out() {
        let m = mapping(&[
            ("openid", "openid"),
            ("nickname", "name"),
            ("avatar_url", "avatar"),
            ("city", "city"),
            ("language", "language"),
        ]);
        let checked = check(
            &row(&[
                Some("oGZUI0egBJY1zhBYw2KhdUfwVJJE"),
                Some("小明🐱"),
                Some("https://thirdwx.qlogo.cn/mmopen/abc/132"),
                Some(""),
                None,
            ]),
            &m,
            None,
        )
        .unwrap();
        assert!(checked.warnings.is_empty());
        assert_eq!(checked.person.openid, "oGZUI0egBJY1zhBYw2KhdUfwVJJE");
        assert_eq!(checked.person.nickname.as_deref(), Some("小明🐱"));
        assert_eq!(checked.person.city, None);
        assert_eq!(checked.person.language, None);
        assert_eq!(checked.person.gender, 0);
    }

    #[test]
    fn rows_without_a_usable_openid_or_with_overlong_values_are_invalid() {
        let m = mapping(&[
            ("openid", "openid"),
            ("nickname", "name"),
            ("language", "l"),
        ]);
        let err = |values: &[Option<&str>]| check(&row(values), &m, None).unwrap_err();
        assert_eq!(err(&[Some(""), None, None]), "openid is empty");
        assert_eq!(err(&[None, None, None]), "openid is empty");
        assert_eq!(
            err(&[Some(&"o".repeat(129)), None, None]),
            "openid is 129 characters long (at most 128)"
        );
        assert_eq!(
            err(&[Some("o abc"), None, None]),
            "openid must be printable ASCII without spaces"
        );
        assert_eq!(
            err(&[Some("oabc"), Some(&"猫".repeat(256)), None]),
            "nickname is 256 characters long (at most 255)"
        );
        assert_eq!(
            err(&[Some("oabc"), None, Some(&"x".repeat(65))]),
            "language is 65 characters long (at most 64)"
        );
        assert_eq!(
            err(&[Some("oabc"), Some("a\0b"), None]),
            "nickname contains a NUL character"
        );
        assert!(
            check(
                &row(&[Some("oabc"), Some(&"猫".repeat(255)), None]),
                &m,
                None
            )
            .is_ok()
        );
    }

    #[test]
    fn mainland_mobile_numbers_keep_86_and_anything_else_is_dropped_with_a_warning() {
        assert_eq!(
            mainland_mobile("13800138000").as_deref(),
            Some("13800138000")
        );
        assert_eq!(
            mainland_mobile("+86 138-0013-8000").as_deref(),
            Some("13800138000")
        );
        assert_eq!(
            mainland_mobile("8613800138000").as_deref(),
            Some("13800138000")
        );
        assert_eq!(mainland_mobile("12800138000"), None);
        assert_eq!(mainland_mobile("1380013800"), None);
        assert_eq!(mainland_mobile("2025550100"), None);

        let m = mapping(&[("openid", "username"), ("phone", "user_phone")]);
        let checked = check(&row(&[Some("oabc"), Some("2025550100")]), &m, None).unwrap();
        assert_eq!(checked.person.phone, None);
        assert_eq!(
            checked.warnings,
            [
                "phone 202***0100 is not a mainland China mobile number (11 digits): imported \
              without a phone"
            ]
        );
        let checked = check(&row(&[Some("oabc"), Some("13800138000")]), &m, None).unwrap();
        assert_eq!(
            checked.person.phone,
            Some(("86".to_owned(), "13800138000".to_owned()))
        );
    }

    #[test]
    fn genders_are_read_from_django_choices_and_wechat_numbers() {
        assert_eq!(gender("male"), Some(1));
        assert_eq!(gender("Female"), Some(2));
        assert_eq!(gender("女"), Some(2));
        assert_eq!(gender("1"), Some(1));
        assert_eq!(gender("0"), Some(0));
        assert_eq!(gender("robot"), None);
    }

    #[test]
    fn avatar_paths_become_urls_only_under_a_media_url() {
        let media = Url::parse("https://old.example.com/media/").unwrap();
        assert_eq!(
            avatar_url("image/2020/01/01/a.png", Some(&media)).as_deref(),
            Some("https://old.example.com/media/image/2020/01/01/a.png")
        );
        assert_eq!(avatar_url("image/default.png", None), None);
        assert_eq!(
            avatar_url("https://thirdwx.qlogo.cn/x/132", None).as_deref(),
            Some("https://thirdwx.qlogo.cn/x/132")
        );
        assert_eq!(avatar_url("ftp://host/a.png", Some(&media)), None);
    }

    #[test]
    fn django_dates_of_every_backend_are_read_as_utc_seconds() {
        assert_eq!(unix_seconds("1970-01-01 00:00:00"), Some(0));
        assert_eq!(
            unix_seconds("2024-02-29 12:34:56.789012"),
            Some(1_709_210_096)
        );
        assert_eq!(unix_seconds("2024-02-29T12:34:56Z"), Some(1_709_210_096));
        assert_eq!(unix_seconds("2024-02-29 20:34:56+08"), Some(1_709_210_096));
        assert_eq!(
            unix_seconds("2024-02-29 20:34:56.5+08:00"),
            Some(1_709_210_096)
        );
        assert_eq!(
            unix_seconds("2024-02-29 07:34:56-0500"),
            Some(1_709_210_096)
        );
        assert_eq!(unix_seconds("2024-02-29"), Some(1_709_164_800));
        assert_eq!(unix_seconds("1709210096"), Some(1_709_210_096));
        assert_eq!(unix_seconds("yesterday"), None);
        assert_eq!(unix_seconds("2024-13-01 00:00:00"), None);
    }

    #[test]
    fn extra_fields_make_one_json_object() {
        let m = mapping(&[
            ("openid", "username"),
            ("extra.signature", "signature"),
            ("extra.address", "user_address"),
        ]);
        let checked = check(&row(&[Some("oabc"), Some("你好 👋"), Some("")]), &m, None).unwrap();
        assert_eq!(
            checked.person.extra.as_deref(),
            Some(r#"{"signature":"你好 👋"}"#)
        );
        let err = check(
            &row(&[Some("oabc"), Some(&"x".repeat(5000)), None]),
            &m,
            None,
        )
        .unwrap_err();
        assert!(err.contains("at most 4096"), "{err}");
    }
}
