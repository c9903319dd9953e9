-- The environment a tenant's executions run in when they name none; '' takes the platform
-- default (COMFYFLEET_DEFAULT_ENVIRONMENT).
ALTER TABLE tenants ADD COLUMN default_environment text NOT NULL DEFAULT '';
