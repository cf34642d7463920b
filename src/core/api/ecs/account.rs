//! ListAccountSettings, PutAccountSetting, PutAccountSettingDefault, DeleteAccountSetting,
//! stored in the store under `/berth/ecs/accountsettings/`: one key per (principal, name), the
//! account default under `default`. berth has one account; a principal is an identity
//! (`arn:aws:iam::ACCOUNT:user/NAME`, the caller's own unless `principalArn` names one).
//! berth keeps the settings and answers them back; it does not change its behaviour by
//! them (long ARNs are always on).

use serde_json::{json, Value};

use super::arn::ACCOUNT;
use super::ctx::Ctx;
use super::error::{EcsError, EcsResult};
use super::shapes::{page, with_token};
use crate::model::keys;
use crate::store::{Op, Txn};

/// ECS's setting names and the value each has when nobody set it.
const SETTINGS: &[(&str, &str)] = &[
    ("serviceLongArnFormat", "enabled"),
    ("taskLongArnFormat", "enabled"),
    ("containerInstanceLongArnFormat", "enabled"),
    ("awsvpcTrunking", "disabled"),
    ("containerInsights", "disabled"),
    ("dualStackIPv6", "disabled"),
    ("fargateFIPSMode", "disabled"),
    ("tagResourceAuthorization", "on"),
    ("fargateTaskRetirementWaitPeriod", "7"),
    ("guardDutyActivate", "off"),
    ("defaultLogDriverMode", "blocking"),
];

fn prefix() -> String {
    format!("{}ecs/accountsettings/", keys::ROOT)
}

fn user_arn(identity: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:user/{identity}")
}

fn root_arn() -> String {
    format!("arn:aws:iam::{ACCOUNT}:root")
}

/// The store key of a principal's setting (`default` for the account's).
fn key(principal: Option<&str>, name: &str) -> String {
    let who = match principal {
        None => "default".to_string(),
        Some(p) => format!("user-{}", p.rsplit('/').next().unwrap_or(p)),
    };
    format!("{}{who}/{name}", prefix())
}

fn check_name(req: &Value) -> Result<String, EcsError> {
    let name = req["name"].as_str().unwrap_or("");
    if !SETTINGS.iter().any(|(n, _)| *n == name) {
        return Err(EcsError::invalid(format!(
            "invalid account setting name {name:?}"
        )));
    }
    Ok(name.to_string())
}

fn check_value(req: &Value) -> Result<String, EcsError> {
    let v = req["value"].as_str().unwrap_or("");
    if v.is_empty() || v.len() > 64 {
        return Err(EcsError::invalid("value is required"));
    }
    Ok(v.to_string())
}

/// The principal a call is about: `principalArn` (an IAM user/role ARN; the root ARN means
/// the account default) or the caller.
fn principal(cx: &Ctx, req: &Value) -> Result<Option<String>, EcsError> {
    match req["principalArn"].as_str() {
        None | Some("") => Ok(Some(user_arn(&cx.principal))),
        Some(p) if p == root_arn() => Ok(None),
        Some(p) if p.starts_with("arn:aws:iam::") && p.contains('/') => Ok(Some(p.to_string())),
        Some(p) => Err(EcsError::invalid(format!("invalid principalArn {p:?}"))),
    }
}

async fn put_setting(cx: &Ctx, who: Option<&str>, name: &str, value: &str) -> EcsResult {
    let arn = who.map(str::to_string).unwrap_or_else(root_arn);
    let setting = json!({"name": name, "value": value, "principalArn": arn, "type": "user"});
    cx.st
        .store
        .txn(Txn::new().and_then(Op::put(key(who, name), setting.to_string().into_bytes())))
        .await?;
    Ok(json!({ "setting": setting }))
}

pub async fn put(cx: &Ctx, req: &Value) -> EcsResult {
    let name = check_name(req)?;
    let value = check_value(req)?;
    let who = principal(cx, req)?;
    put_setting(cx, who.as_deref(), &name, &value).await
}

pub async fn put_default(cx: &Ctx, req: &Value) -> EcsResult {
    let name = check_name(req)?;
    let value = check_value(req)?;
    put_setting(cx, None, &name, &value).await
}

pub async fn delete(cx: &Ctx, req: &Value) -> EcsResult {
    let name = check_name(req)?;
    let who = principal(cx, req)?;
    let k = key(who.as_deref(), &name);
    let Some(kv) = cx.st.store.get(&k).await? else {
        return Err(EcsError::invalid(format!(
            "account setting {name} is not set"
        )));
    };
    let setting: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
    cx.st.store.txn(Txn::new().and_then(Op::delete(k))).await?;
    Ok(json!({ "setting": setting }))
}

async fn stored(cx: &Ctx, who: Option<&str>, name: &str) -> Result<Option<Value>, EcsError> {
    Ok(cx
        .st
        .store
        .get(&key(who, name))
        .await?
        .and_then(|kv| serde_json::from_slice(&kv.value).ok()))
}

/// ListAccountSettings: the principal's own settings, or with `effectiveSettings` every
/// setting as it applies to the principal (its own, else the account default, else
/// berth's), filtered by `name` / `value`.
pub async fn list(cx: &Ctx, req: &Value) -> EcsResult {
    let who = principal(cx, req)?;
    let effective = req["effectiveSettings"].as_bool().unwrap_or(false);
    let name = match req["name"].as_str() {
        Some(_) => Some(check_name(req)?),
        None => None,
    };
    let value = req["value"].as_str();
    let mut out = vec![];
    for (n, dflt) in SETTINGS {
        if name.as_deref().is_some_and(|w| w != *n) {
            continue;
        }
        let mine = match &who {
            Some(p) => stored(cx, Some(p), n).await?,
            None => None,
        };
        let s = match mine {
            Some(s) => Some(s),
            None if effective || who.is_none() => match stored(cx, None, n).await? {
                Some(s) => Some(s),
                None if effective => Some(json!({"name": n, "value": dflt,
                    "principalArn": root_arn(), "type": "aws_managed"})),
                None => None,
            },
            None => None,
        };
        if let Some(s) = s.filter(|s| value.is_none_or(|v| s["value"] == v)) {
            out.push(s);
        }
    }
    let (out, next) = page(out, req, 10)?;
    Ok(with_token(json!({ "settings": out }), next))
}
