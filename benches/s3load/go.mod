module walstore.local/benches/s3load

go 1.22
