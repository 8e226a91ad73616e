-- Where a pack installed from an OCI registry came from: the reference as
-- given (`oci://ghcr.io/acme/tools:1.2.0` or `…@sha256:…`) and the digest
-- of the manifest that was pulled. Both are null for an uploaded pack.
ALTER TABLE pack ADD COLUMN oci_reference TEXT;
ALTER TABLE pack ADD COLUMN oci_digest TEXT;
