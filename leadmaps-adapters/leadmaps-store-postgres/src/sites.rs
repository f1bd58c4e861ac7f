//! Sites and the workspace's blocked client ranges. Routing a domain happens before any scope
//! exists, so it goes through the `leadmaps.site_route` lookup function.

use std::str::FromStr;

use async_trait::async_trait;
use ipnet::IpNet;
use leadmaps_core::audit::drafts;
use leadmaps_core::store::{Site, SiteRoute, SiteStore, normalize_domain};
use leadmaps_core::tenancy::{Action, Region, Scope, WorkspaceId};
use leadmaps_core::{Error, Result};
use time::OffsetDateTime;

use crate::error::{internal, pg, pg_conflict};
use crate::store::{PostgresStore, id, scoped};

fn ranges_from_text(ranges: Vec<String>) -> Result<Vec<IpNet>> {
    ranges
        .iter()
        .map(|range| {
            IpNet::from_str(range).map_err(|_| internal("a stored address range does not parse"))
        })
        .collect()
}

#[async_trait]
impl SiteStore for PostgresStore {
    async fn add_site(
        &self,
        scope: &Scope,
        domain: &str,
        created_at: OffsetDateTime,
    ) -> Result<Site> {
        scope.require(Action::WorkspaceUpdate)?;
        let domain = normalize_domain(domain)?;
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.workspace(), false).await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO leadmaps.sites (workspace_id, domain, created_at)
                 SELECT $1::uuid, $2::text, $3::timestamptz
                 WHERE EXISTS (SELECT FROM leadmaps.workspaces WHERE workspace_id = $1::uuid)
                 RETURNING created_at",
            )
            .await
            .map_err(pg)?;
        let row = tx
            .query_opt(&insert, &[&id(scope.workspace()), &domain, &created_at])
            .await
            .map_err(|e| pg_conflict(e, "domain belongs to a site already"))?
            .ok_or(Error::NotFound)?;
        let site = Site {
            workspace: scope.workspace(),
            domain,
            created_at: row.try_get(0).map_err(pg)?,
        };
        let draft = drafts::site_added(scope, &site.domain);
        crate::audit::append_in(&tx, scope.workspace(), draft, created_at).await?;
        tx.commit().await.map_err(pg)?;
        Ok(site)
    }

    async fn sites(&self, scope: &Scope) -> Result<Vec<Site>> {
        let rows = self.scoped_read(scope, "SELECT domain, created_at FROM leadmaps.sites WHERE workspace_id = $1 ORDER BY domain", &[&id(scope.workspace())]).await?;
        rows.iter()
            .map(|row| {
                Ok(Site {
                    workspace: scope.workspace(),
                    domain: row.try_get(0).map_err(pg)?,
                    created_at: row.try_get(1).map_err(pg)?,
                })
            })
            .collect()
    }

    async fn set_blocked_ips(
        &self,
        scope: &Scope,
        ranges: &[IpNet],
        at: OffsetDateTime,
    ) -> Result<()> {
        scope.require(Action::WorkspaceUpdate)?;
        let text: Vec<String> = ranges.iter().map(IpNet::to_string).collect();
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.workspace(), false).await?;
        // The old ranges under a row lock, for the record's "before".
        let current = tx
            .prepare_cached(
                "SELECT blocked_ips FROM leadmaps.workspaces WHERE workspace_id = $1 FOR UPDATE",
            )
            .await
            .map_err(pg)?;
        let before = ranges_from_text(
            tx.query_opt(&current, &[&id(scope.workspace())])
                .await
                .map_err(pg)?
                .ok_or(Error::NotFound)?
                .try_get(0)
                .map_err(pg)?,
        )?;
        let update = tx
            .prepare_cached(
                "UPDATE leadmaps.workspaces SET blocked_ips = $2 WHERE workspace_id = $1",
            )
            .await
            .map_err(pg)?;
        tx.execute(&update, &[&id(scope.workspace()), &text])
            .await
            .map_err(pg)?;
        let draft = drafts::blocked_ips_updated(scope, &before, ranges);
        crate::audit::append_in(&tx, scope.workspace(), draft, at).await?;
        tx.commit().await.map_err(pg)
    }

    async fn site_route(&self, domain: &str) -> Result<Option<SiteRoute>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT route_workspace, route_region, route_blocked_ips FROM leadmaps.site_route($1)",
            )
            .await
            .map_err(pg)?;
        let Some(row) = client.query_opt(&select, &[&domain]).await.map_err(pg)? else {
            return Ok(None);
        };
        let region: String = row.try_get(1).map_err(pg)?;
        Ok(Some(SiteRoute {
            workspace: WorkspaceId::from_uuid(row.try_get(0).map_err(pg)?),
            region: Region::from_str(&region)
                .map_err(|_| internal("a stored region is unknown"))?,
            blocked_ips: ranges_from_text(row.try_get(2).map_err(pg)?)?,
        }))
    }
}
