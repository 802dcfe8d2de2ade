// pressor web app: its only script of its own (every page works without it).
// A file chosen in an <input type="file" data-fills="ID"> is read into the textarea ID,
// so that a bundle can be uploaded without a multipart request.
document.addEventListener("change", function (event) {
  var input = event.target;
  if (!input.matches || !input.matches("input[type=file][data-fills]") || !input.files.length) {
    return;
  }
  var target = document.getElementById(input.getAttribute("data-fills"));
  var reader = new FileReader();
  reader.onload = function () { target.value = reader.result; };
  reader.readAsText(input.files[0]);
});

// A fragment request refused because the session ended (401) or the page's CSRF token is stale
// (403): htmx swaps nothing for errors, so reload the page, which shows the sign-in page or a fresh token.
document.addEventListener("htmx:responseError", function (event) {
  var status = event.detail.xhr.status;
  if (status === 401 || status === 403) {
    window.location.reload();
  }
});
