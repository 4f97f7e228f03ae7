"""Accounts: users, passwords, 2FA and sessions."""
