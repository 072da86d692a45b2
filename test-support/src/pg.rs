//! A private PostgreSQL schema per test on the machine's database server.

/// The database the tests use: `NOC_TEST_POSTGRES_URL`, default the local `test` database.
pub fn test_postgres_url() -> String {
    std::env::var("NOC_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A schema created for one test; [`TestSchema::url`] points a store at it.
pub struct TestSchema {
    pub name: String,
    base: String,
}

impl TestSchema {
    pub async fn create() -> Self {
        let base = test_postgres_url();
        let name = format!("noc_test_{}", noc_protocol::secrets::random_hex::<8>());
        let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL must be running for this test (scripts/test.sh starts it)");
        tokio::spawn(conn);
        client.batch_execute(&format!("CREATE SCHEMA {name}")).await.expect("create schema");
        Self { name, base }
    }

    /// A URL using this schema, optionally through another host:port (a proxy).
    pub fn url(&self, via: Option<std::net::SocketAddr>) -> String {
        let mut url = self.base.clone();
        if let Some(addr) = via {
            url = url.replacen("127.0.0.1:5432", &addr.to_string(), 1);
        }
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}options=-csearch_path%3D{}", self.name)
    }

    pub async fn drop_schema(self) {
        if let Ok((client, conn)) = tokio_postgres::connect(&self.base, tokio_postgres::NoTls).await {
            tokio::spawn(conn);
            let _ = client.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name)).await;
        }
    }
}
