"""Transport security: certificates, TLS credentials and secure channels."""
