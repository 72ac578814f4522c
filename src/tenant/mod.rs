//! The tenant: which one a session belongs to ([`source`]), and setting it
//! LOCAL in every transaction the session runs ([`inject`]), so that
//! PostgreSQL's row-level security isolates tenants whatever the application
//! does or forgets.

pub mod inject;
pub mod source;

/// The statement pgward runs at the start of every transaction. The tenant
/// was checked against a character set that needs no quoting and the
/// setting name against PostgreSQL's custom-setting syntax (see
/// `config::tenant`), and the literal is quoted all the same.
pub fn set_local_sql(setting: &str, tenant: &str) -> String {
    format!("SET LOCAL {setting} = '{}'", tenant.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statement_parses_as_a_single_set_local() {
        let sql = set_local_sql("app.current_tenant", "acme");
        let stmts = crate::inspect::inspect(&sql).unwrap();
        assert_eq!(stmts.len(), 1);
        assert_eq!(stmts[0].settings_changed, vec!["app.current_tenant"]);
    }
}
