"""The site node: local data, discriminator(s), the site's own privacy policy, budget and release log."""
