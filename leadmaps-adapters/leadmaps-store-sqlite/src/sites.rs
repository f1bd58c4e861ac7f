//! [`SiteStore`] on the `sites` and `blocked_ips` tables.

use async_trait::async_trait;
use ipnet::IpNet;
use leadmaps_core::Result;
use leadmaps_core::audit::drafts;
use leadmaps_core::store::{Site, SiteRoute, SiteStore, normalize_domain};
use leadmaps_core::tenancy::{Action, Scope};
use rusqlite::types::Type;
use rusqlite::{OptionalExtension, Row, params};
use time::OffsetDateTime;

use crate::SqliteStore;
use crate::codec::{corrupt, get_id, get_region, get_text, get_time, id_bytes, unix_nanos};
use crate::error::{classify, db};
use crate::sql;

/// Blocked ranges as stored: CIDRs separated by single spaces (none contains a space).
fn ranges_text(ranges: &[IpNet]) -> String {
    let mut text = String::with_capacity(ranges.len() * 20);
    for (i, range) in ranges.iter().enumerate() {
        if i > 0 {
            text.push(' ');
        }
        text.push_str(&range.to_string());
    }
    text
}

/// Reads a blocked-ranges column; NULL (no row) is no ranges.
fn get_ranges(row: &Row<'_>, column: usize) -> rusqlite::Result<Vec<IpNet>> {
    let Some(text) = get_text(row, column)? else {
        return Ok(Vec::new());
    };
    text.split(' ')
        .filter(|range| !range.is_empty())
        .map(|range| {
            range
                .parse::<IpNet>()
                .map_err(|_| corrupt(column, Type::Text, "blocked address range"))
        })
        .collect()
}

fn read_site(row: &Row<'_>) -> rusqlite::Result<Site> {
    Ok(Site {
        workspace: get_id(row, 0)?,
        domain: row.get(1)?,
        created_at: get_time(row, 2)?,
    })
}

#[async_trait]
impl SiteStore for SqliteStore {
    async fn add_site(
        &self,
        scope: &Scope,
        domain: &str,
        created_at: OffsetDateTime,
    ) -> Result<Site> {
        scope.require(Action::WorkspaceUpdate)?;
        let site = Site {
            workspace: scope.workspace(),
            domain: normalize_domain(domain)?,
            created_at,
        };
        let nanos = unix_nanos(created_at)?;
        let (id, domain) = (id_bytes(site.workspace), site.domain.clone());
        let draft = drafts::site_added(scope, &domain);
        self.logged(site.workspace, created_at, move |tx| {
            let mut insert = tx.prepare_cached(sql::INSERT_SITE).map_err(db)?;
            // The domain is the key: any workspace holding it is a conflict. A workspace that
            // does not exist fails the foreign key: not found.
            insert
                .execute(params![id, domain, nanos])
                .map_err(|e| classify(e, "domain belongs to a site already"))?;
            Ok(((), Some(draft)))
        })
        .await?;
        Ok(site)
    }

    async fn sites(&self, scope: &Scope) -> Result<Vec<Site>> {
        let id = id_bytes(scope.workspace());
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(sql::SELECT_SITES).map_err(db)?;
                let sites = select.query_map([id], read_site).map_err(db)?;
                sites.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
            })
            .await
    }

    async fn set_blocked_ips(
        &self,
        scope: &Scope,
        ranges: &[IpNet],
        at: OffsetDateTime,
    ) -> Result<()> {
        scope.require(Action::WorkspaceUpdate)?;
        let (id, text) = (id_bytes(scope.workspace()), ranges_text(ranges));
        let (scope, ranges) = (scope.clone(), ranges.to_vec());
        self.logged(scope.workspace(), at, move |tx| {
            let before = tx
                .prepare_cached(sql::SELECT_BLOCKED_IPS)
                .map_err(db)?
                .query_row([&id], |row| get_ranges(row, 0))
                .optional()
                .map_err(db)?
                .unwrap_or_default();
            // One upsert: the foreign key refuses a workspace that does not exist, even when
            // the list is empty.
            let mut upsert = tx.prepare_cached(sql::UPSERT_BLOCKED_IPS).map_err(db)?;
            upsert.execute(params![id, text]).map_err(db)?;
            let draft = drafts::blocked_ips_updated(&scope, &before, &ranges);
            Ok(((), Some(draft)))
        })
        .await
    }

    async fn site_route(&self, domain: &str) -> Result<Option<SiteRoute>> {
        let domain = domain.to_owned();
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(sql::SITE_ROUTE).map_err(db)?;
                select
                    .query_row([domain], |row| {
                        Ok(SiteRoute {
                            workspace: get_id(row, 0)?,
                            region: get_region(row, 1)?,
                            blocked_ips: get_ranges(row, 2)?,
                        })
                    })
                    .optional()
                    .map_err(db)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_ranges_round_trip_in_order() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let ranges: Vec<IpNet> = ["2001:db8::/32", "198.51.100.9/24", "10.0.0.0/8", "::1/128"]
            .iter()
            .map(|r| r.parse().unwrap())
            .collect();
        for list in [&ranges[..], &ranges[..1], &[]] {
            let back = conn
                .query_row("SELECT ?1", [ranges_text(list)], |row| get_ranges(row, 0))
                .unwrap();
            assert_eq!(back, list, "host bits and order are kept");
        }
        let none = conn
            .query_row("SELECT NULL", [], |row| get_ranges(row, 0))
            .unwrap();
        assert!(none.is_empty());
        assert!(
            conn.query_row("SELECT '10.0.0.0/8 nope'", [], |row| get_ranges(row, 0))
                .is_err()
        );
    }
}
