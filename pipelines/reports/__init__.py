"""What analysts open: reports/index.html and the HTML pieces every report shares."""
