// Bulk actions without inline onclick handlers (the Content-Security-Policy forbids them).
document.addEventListener('click', function (event) {
  var link = event.target.closest('[data-model-action]');
  if (!link) { return; }
  event.preventDefault();
  modelActions.execute(link.getAttribute('data-model-action'));
});
