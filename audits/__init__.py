"""Privacy audits run at a site: membership inference, memorisation, empirical epsilon, signed reports."""
