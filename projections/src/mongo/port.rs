//! `ReadStore` for `MongoStore`: the port's operations, each a few calls
//! of the store's helpers (`super`) with the pure parts of `queries`,
//! `documents` and `registry`.

use super::*;

/// A descending cursor `(integer key, id)`.
fn int_id_cursor(page: &PageRequest) -> StoreResult<Option<(i64, String)>> {
    page.cursor
        .as_ref()
        .map(|c| {
            let parts = cursor::decode(c, 2)?;
            Ok((cursor::int(&parts[0])?, parts[1].clone()))
        })
        .transpose()
}

impl ReadStore for MongoStore {
    fn backend(&self) -> &'static str {
        "mongodb"
    }

    fn prepare<'a>(&'a self, targets: &'a [ProjectionVersion]) -> BoxFuture<'a, StoreResult<()>> {
        Box::pin(self.prepare_all(targets.to_vec()))
    }

    fn apply(&self, batch: ProjectedBatch) -> BoxFuture<'_, StoreResult<ApplyOutcome>> {
        Box::pin(self.apply_batch(batch))
    }

    fn checkpoints(&self) -> BoxFuture<'_, StoreResult<Vec<Checkpoint>>> {
        Box::pin(async move {
            let versions = self.find(VERSIONS, doc! {}, doc! {}, 1_000, None).await?;
            let docs = self.find(CHECKPOINTS, doc! {}, doc! {"_id": 1}, 10_000, None).await?;
            let mut out = Vec::with_capacity(docs.len());
            for d in docs {
                let Some(projection) = d.get_str("projection").ok().and_then(Projection::parse) else { continue };
                let version = bookkeeping_u32(&d, CHECKPOINTS, "version")?.unwrap_or(1);
                let mut active = 1;
                if let Some(v) = versions.iter().find(|v| v.get_str("_id").is_ok_and(|n| n == projection.name())) {
                    active = bookkeeping_u32(v, VERSIONS, "active")?.unwrap_or(1);
                }
                let position =
                    crate::model::pos_u64(CHECKPOINTS, bookkeeping_number(&d, CHECKPOINTS, "position")?.unwrap_or(0))?;
                let updated_at = d
                    .get_datetime("updatedAt")
                    .ok()
                    .and_then(|t| chrono::DateTime::from_timestamp_millis(t.timestamp_millis()))
                    .unwrap_or_default();
                out.push(Checkpoint { projection, version, position, active: version == active, updated_at });
            }
            out.sort_by_key(|c| (c.projection.name(), c.version));
            Ok(out)
        })
    }

    /// On the server's clock (`$$NOW`): `now_ms`, the caller's, is not
    /// used, so that holders whose clocks disagree still see one expiry.
    fn acquire_lease<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        ttl_ms: u64,
        _now_ms: i64,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        Box::pin(async move {
            let result = self
                .db
                .collection::<Document>(LEASES)
                .update_one(registry::lease_filter(key, owner), registry::lease_update(owner, ttl_ms))
                .upsert(true)
                .await;
            match result {
                Ok(r) => Ok(r.matched_count >= 1 || r.upserted_id.is_some()),
                // Held by another: the filter matched nothing and the
                // upsert hit the existing `_id`.
                Err(e) if duplicate_key(&e) => Ok(false),
                Err(e) => Err(classify(e)),
            }
        })
    }

    fn release_lease<'a>(&'a self, key: &'a str, owner: &'a str) -> BoxFuture<'a, StoreResult<()>> {
        Box::pin(async move {
            self.db
                .collection::<Document>(LEASES)
                .update_one(doc! {"_id": key, "owner": owner}, registry::lease_release())
                .await
                .map(|_| ())
                .map_err(classify)
        })
    }

    fn active_version(&self, projection: Projection) -> BoxFuture<'_, StoreResult<u32>> {
        Box::pin(self.active_version_with(projection, None))
    }

    fn activate(&self, target: ProjectionVersion) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            // Forward only: a registry at a newer version matches nothing,
            // and the upsert then hits its `_id`.
            let version = i64::from(target.version);
            let result = self
                .db
                .collection::<Document>(VERSIONS)
                .update_one(
                    doc! {"_id": target.projection.name(), "active": {"$lte": version}},
                    doc! {"$set": {"active": version}},
                )
                .upsert(true)
                .await;
            match result {
                Ok(_) => {}
                Err(e) if duplicate_key(&e) => {
                    return Err(ProjectionError::InvalidInput(format!("{target} is older than the active version")));
                }
                Err(e) => return Err(classify(e)),
            }
            self.point_runbook_names(target.projection).await;
            Ok(())
        })
    }

    fn drop_version(&self, target: ProjectionVersion) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            if self.active_version_with(target.projection, None).await? == target.version {
                return Err(ProjectionError::InvalidInput(format!("{target} is the active version")));
            }
            for collection in target.projection.collections() {
                self.drop_collection(&collection.physical_name(target.version)).await?;
            }
            self.db
                .collection::<Document>(CHECKPOINTS)
                .delete_one(doc! {"_id": target.key()})
                .await
                .map_err(classify)?;
            // Dropping version 1 frees the runbook names.
            self.point_runbook_names(target.projection).await;
            Ok(())
        })
    }

    fn scan<'a>(
        &'a self,
        target: ProjectionVersion,
        collection: Collection,
        after_key: Option<&'a str>,
        limit: u32,
    ) -> BoxFuture<'a, StoreResult<ScanPage>> {
        Box::pin(self.scan_collection(target, collection, after_key.map(str::to_string), limit))
    }

    fn user_by_id(&self, user_id: Uuid) -> BoxFuture<'_, StoreResult<Option<UserDoc>>> {
        Box::pin(self.one(
            Projection::Users,
            Collection::Users,
            doc! {"_id": user_id.to_string()},
            documents::read_user,
        ))
    }

    fn user_by_email<'a>(&'a self, email: &'a str) -> BoxFuture<'a, StoreResult<Option<UserDoc>>> {
        let email = normalise_email(email);
        Box::pin(async move {
            self.one(Projection::Users, Collection::Users, doc! {"email": email}, documents::read_user).await
        })
    }

    fn wallet(&self, user_id: Uuid) -> BoxFuture<'_, StoreResult<Option<WalletDoc>>> {
        Box::pin(self.one(
            Projection::Wallets,
            Collection::Wallets,
            doc! {"_id": user_id.to_string()},
            documents::read_wallet,
        ))
    }

    fn transactions<'a>(
        &'a self,
        user_id: Uuid,
        filter: TransactionFilter,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TransactionDoc>>> {
        Box::pin(async move {
            let after = int_id_cursor(page)?;
            let name = self.active_collection(Projection::Transactions, Collection::Transactions).await?;
            let query = queries::transactions_query(user_id, filter, after.as_ref().map(|(t, id)| (*t, id.as_str())));
            self.page_of(&name, query, page.limit(), documents::read_transaction, |t: &TransactionDoc| {
                cursor::encode(&[&t.created_at.timestamp_millis().to_string(), &t.id.to_string()])
            })
            .await
        })
    }

    fn live_streams<'a>(
        &'a self,
        category: Option<&'a str>,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<StreamDoc>>> {
        Box::pin(async move {
            let after = int_id_cursor(page)?;
            let category = category.map(|c| c.trim().to_lowercase());
            let name = self.active_collection(Projection::Streams, Collection::Streams).await?;
            let query =
                queries::live_streams_query(category.as_deref(), after.as_ref().map(|(v, id)| (*v, id.as_str())));
            self.page_of(&name, query, page.limit(), documents::read_stream, |s: &StreamDoc| {
                cursor::encode(&[&s.viewers.to_string(), &s.id.to_string()])
            })
            .await
        })
    }

    fn stream(&self, stream_id: Uuid) -> BoxFuture<'_, StoreResult<Option<StreamDoc>>> {
        Box::pin(self.one(
            Projection::Streams,
            Collection::Streams,
            doc! {"_id": stream_id.to_string()},
            documents::read_stream,
        ))
    }

    fn leaderboard<'a>(
        &'a self,
        stream_id: Uuid,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<LeaderboardEntry>>> {
        Box::pin(async move {
            let after = int_id_cursor(page)?;
            let name = self.active_collection(Projection::GiftLeaderboards, Collection::GiftLeaderboards).await?;
            let query = queries::leaderboard_query(stream_id, after.as_ref().map(|(c, u)| (*c, u.as_str())));
            self.page_of(&name, query, page.limit(), documents::read_leaderboard, |e: &LeaderboardEntry| {
                cursor::encode(&[&e.coins.to_string(), &e.user_id.to_string()])
            })
            .await
        })
    }

    fn ledger_entry_at(
        &self,
        account: Account,
        position_max: u64,
        time_max: Option<chrono::DateTime<chrono::Utc>>,
    ) -> BoxFuture<'_, StoreResult<Option<LedgerEntryDoc>>> {
        Box::pin(async move {
            let name = self.active_collection(Projection::Ledger, Collection::LedgerEntries).await?;
            let (filter, sort) = queries::entry_at_query(account, position_max, time_max);
            let docs = self.find(&name, filter, sort, 1, None).await?;
            docs.first().map(documents::read_entry).transpose()
        })
    }

    fn ledger_entries_window(
        &self,
        account: Account,
        time_min: chrono::DateTime<chrono::Utc>,
        after: (u64, u32),
        until: (u64, u32),
        limit: u32,
    ) -> BoxFuture<'_, StoreResult<Vec<LedgerEntryDoc>>> {
        Box::pin(async move {
            let name = self.active_collection(Projection::Ledger, Collection::LedgerEntries).await?;
            let (filter, sort) = queries::entries_window_query(account, time_min, after, until);
            let docs = self.find(&name, filter, sort, limit, None).await?;
            docs.iter().map(documents::read_entry).collect()
        })
    }

    fn gifts_from_negative_wallets(
        &self,
        host_id: Uuid,
        since: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'_, StoreResult<i64>> {
        Box::pin(async move {
            let streams = self.active_collection(Projection::Streams, Collection::Streams).await?;
            let boards = self.active_collection(Projection::GiftLeaderboards, Collection::GiftLeaderboards).await?;
            let wallets = self.active_collection(Projection::Wallets, Collection::Wallets).await?;
            let since = Bson::DateTime(mongodb::bson::DateTime::from_millis(since.timestamp_millis()));
            let filter =
                doc! {"hostId": host_id.to_string(), "$or": [{"endTime": Bson::Null}, {"endTime": {"$gte": since}}]};
            let found =
                self.find(&streams, filter, doc! {"startTime": -1}, crate::store::RISK_STREAMS_MAX, None).await?;
            let ids: Vec<Bson> = found.iter().filter_map(|d| d.get_str("_id").ok()).map(Bson::from).collect();
            if ids.is_empty() {
                return Ok(0);
            }
            let filter = doc! {"streamId": {"$in": ids}};
            let gifts = self.find(&boards, filter, doc! {"_id": 1}, crate::store::RISK_GIFTERS_MAX, None).await?;
            let gifts: Vec<LeaderboardEntry> =
                gifts.iter().map(documents::read_leaderboard).collect::<StoreResult<_>>()?;
            let users: Vec<Bson> = gifts.iter().map(|g| Bson::from(g.user_id.to_string())).collect();
            if users.is_empty() {
                return Ok(0);
            }
            let filter = doc! {"_id": {"$in": users}, "coins": {"$lt": 0}};
            let negative = self.find(&wallets, filter, doc! {"_id": 1}, crate::store::RISK_GIFTERS_MAX, None).await?;
            let negative: std::collections::HashSet<&str> =
                negative.iter().filter_map(|d| d.get_str("_id").ok()).collect();
            Ok(gifts
                .iter()
                .filter(|g| negative.contains(g.user_id.to_string().as_str()))
                .fold(0i64, |sum, g| sum.saturating_add(g.coins)))
        })
    }

    fn adjustments<'a>(
        &'a self,
        status: Option<AdjustmentStatus>,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<AdjustmentDoc>>> {
        Box::pin(async move {
            let after = int_id_cursor(page)?;
            let name = self.active_collection(Projection::Payouts, Collection::Adjustments).await?;
            let query = queries::adjustments_query(status, after.as_ref().map(|(t, id)| (*t, id.as_str())));
            self.page_of(&name, query, page.limit(), documents::read_adjustment, |a: &AdjustmentDoc| {
                cursor::encode(&[&a.proposed_at.timestamp_millis().to_string(), &a.id.to_string()])
            })
            .await
        })
    }

    fn payout(&self, payout_id: Uuid) -> BoxFuture<'_, StoreResult<Option<PayoutDoc>>> {
        Box::pin(self.one(
            Projection::Payouts,
            Collection::Payouts,
            doc! {"_id": payout_id.to_string()},
            documents::read_payout,
        ))
    }

    fn user_payouts<'a>(&'a self, user_id: Uuid, page: &'a PageRequest) -> BoxFuture<'a, StoreResult<Page<PayoutDoc>>> {
        Box::pin(async move {
            let after = int_id_cursor(page)?;
            let name = self.active_collection(Projection::Payouts, Collection::Payouts).await?;
            let query = queries::payouts_query(Some(user_id), None, after.as_ref().map(|(t, id)| (*t, id.as_str())));
            self.page_of(&name, query, page.limit(), documents::read_payout, payout_cursor).await
        })
    }

    fn payouts<'a>(
        &'a self,
        status: Option<PayoutStatus>,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<PayoutDoc>>> {
        Box::pin(async move {
            let after = int_id_cursor(page)?;
            let name = self.active_collection(Projection::Payouts, Collection::Payouts).await?;
            let query = queries::payouts_query(None, status, after.as_ref().map(|(t, id)| (*t, id.as_str())));
            self.page_of(&name, query, page.limit(), documents::read_payout, payout_cursor).await
        })
    }

    fn ledger_entries<'a>(
        &'a self,
        account: Account,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<LedgerEntryDoc>>> {
        Box::pin(async move {
            let after = match &page.cursor {
                None => None,
                Some(c) => {
                    let parts = cursor::decode(c, 2)?;
                    Some((cursor::int(&parts[0])?, cursor::int(&parts[1])?))
                }
            };
            let name = self.active_collection(Projection::Ledger, Collection::LedgerEntries).await?;
            self.page_of(
                &name,
                queries::entries_query(account, after),
                page.limit(),
                documents::read_entry,
                |e: &LedgerEntryDoc| cursor::encode(&[&e.position.to_string(), &e.seq.to_string()]),
            )
            .await
        })
    }

    fn trial_balance<'a>(&'a self, page: &'a PageRequest) -> BoxFuture<'a, StoreResult<TrialBalance>> {
        Box::pin(async move {
            let after = match &page.cursor {
                None => None,
                Some(c) => Some(cursor::decode(c, 1)?.remove(0)),
            };
            let version = self.active_version_with(Projection::Ledger, None).await?;
            let name = Collection::LedgerAccounts.physical_name(version);
            let filter = after.map_or_else(Document::new, |a| doc! {"_id": {"$gt": a}});
            let page = self
                .page_of(&name, (filter, doc! {"_id": 1}), page.limit(), documents::read_account, |a| {
                    cursor::encode(&[&a.account.to_string()])
                })
                .await?;
            let totals = self
                .aggregate(
                    &name,
                    vec![doc! {"$group": {"_id": Bson::Null, "total": {"$sum": "$balance"}, "count": {"$sum": 1}}}],
                    1,
                )
                .await?;
            let number = |field: &str| -> StoreResult<i64> {
                Ok(match totals.first() {
                    Some(d) => bookkeeping_number(d, &name, field)?.unwrap_or(0),
                    None => 0,
                })
            };
            let (total, count) = (number("total")?, number("count")?);
            let key = ProjectionVersion::new(Projection::Ledger, version).key();
            let position = self.checkpoint_of(&key, None).await?;
            Ok(TrialBalance {
                items: page.items,
                next_cursor: page.next_cursor,
                total_coins: total,
                accounts_count: u64::try_from(count).unwrap_or(0),
                position,
            })
        })
    }

    fn stripe_payment<'a>(&'a self, payment_id: &'a str) -> BoxFuture<'a, StoreResult<Option<StripePaymentDoc>>> {
        Box::pin(self.one(
            Projection::StripePayments,
            Collection::StripePayments,
            doc! {"_id": payment_id},
            documents::read_stripe_payment,
        ))
    }

    fn stripe_payments<'a>(
        &'a self,
        filter: &'a StripePaymentFilter,
        page: &'a PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<StripePaymentDoc>>> {
        Box::pin(async move {
            let after = match &page.cursor {
                None => None,
                Some(c) => Some(cursor::decode(c, 1)?.remove(0)),
            };
            let name = self.active_collection(Projection::StripePayments, Collection::StripePayments).await?;
            self.page_of(
                &name,
                queries::stripe_payments_query(after.as_deref(), filter),
                page.limit(),
                documents::read_stripe_payment,
                |d: &StripePaymentDoc| cursor::encode(&[&d.payment_id]),
            )
            .await
        })
    }

    fn ledger_days(
        &self,
        first: chrono::NaiveDate,
        last: chrono::NaiveDate,
    ) -> BoxFuture<'_, StoreResult<Vec<LedgerDayDoc>>> {
        Box::pin(async move {
            crate::store::check_day_range(first, last)?;
            let name = self.active_collection(Projection::LedgerDaily, Collection::LedgerDaily).await?;
            // `_id` is `YYYY-MM-DD`, which sorts as the dates do.
            let filter = doc! {"_id": {"$gte": first.to_string(), "$lte": last.to_string()}};
            let docs = self.find(&name, filter, doc! {"_id": 1}, crate::store::LEDGER_DAYS_MAX, None).await?;
            docs.iter().map(documents::read_ledger_day).collect()
        })
    }
}

fn payout_cursor(p: &PayoutDoc) -> String {
    cursor::encode(&[&p.requested_at.timestamp_millis().to_string(), &p.id.to_string()])
}

fn duplicate_key(e: &mongodb::error::Error) -> bool {
    matches!(e.kind.as_ref(), ErrorKind::Write(WriteFailure::WriteError(w)) if w.code == writes::DUPLICATE_KEY)
}
