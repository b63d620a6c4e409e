"""From finished runs and analysis outputs to the paper's tables and Figure 4 (`afictl report`)."""
