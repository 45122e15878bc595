"""Host projects the app is tested in, written as a shop we did not write would be: nothing copied from `shop/`."""
